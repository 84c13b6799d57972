"""The teacher-student protocol: :mod:`.protocol` (settings, teacher cache, the run), :mod:`.teacher`
(the teacher actor), :mod:`.trainer` (the Ray Train worker loop), :mod:`.data` (windows, batches)."""
