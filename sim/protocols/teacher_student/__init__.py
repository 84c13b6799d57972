"""The teacher-student protocol: :mod:`.protocol` (settings, the teacher's cache, the run),
:mod:`.teacher` (the teacher actor), :mod:`.trainer` (the Ray Train worker loop) and
:mod:`.data` (windows and batches)."""
