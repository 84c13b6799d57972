"""Local minibatch SGD for many clients at once: one model, stacked parameters, ``torch.func``.

The model is made a pure function of a flat parameter vector with
``torch.func.functional_call``, and ``torch.func.vmap(torch.func.grad_and_value(...))`` gives
every client's gradient in one call, as in the per-sample-gradients pattern of the torch.func
docs (https://pytorch.org/docs/stable/func.html, "Per-sample-gradients" tutorial) with clients in
place of samples. Client ``k`` draws its shuffles from its own generator exactly as
:meth:`sim.training.model.ClientData.batches` does, so the result matches
:func:`sim.training.sgd.local_sgd` run client by client (to float rounding). Ragged sizes: each
client's batches are padded to a common width with an example mask (the loss is the mean over
the real examples), and a client with fewer steps than the longest one stops updating (a step
mask). Pure torch; no Ray here. The module must be a pure function of parameters and input (no
batch-norm statistics, no dropout), as the models of ``models`` are.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vmap

from sim.interfaces.federated import LossTerm
from sim.training.model import ClientData, ClientModel

CHUNK_BYTES = 2**28  # default budget for the stacked parameter-sized tensors of one chunk


def _schedule(
    sizes: np.ndarray, rngs: list[np.random.Generator], epochs: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every client's minibatches as padded rows of local example indices, in the order
    ``ClientData.batches`` yields them, epoch after epoch.

    Returns ``index`` (K, T, width) (0 in padding), ``valid`` (K, T, width) the example mask, and
    ``steps`` (K,) each client's number of SGD steps; T is the largest.
    """
    width = int(min(batch_size, sizes.max(initial=0)))
    per_epoch = -(-sizes // batch_size)
    steps = epochs * per_epoch
    index = np.zeros((len(sizes), int(steps.max(initial=0)), width), np.int64)
    valid = np.zeros(index.shape, bool)
    for k, (size, rng) in enumerate(zip(sizes, rngs, strict=True)):
        slots = np.zeros((epochs, per_epoch[k] * width), np.int64)
        for epoch in range(epochs):
            slots[epoch, :size] = rng.permutation(size)
        index[k, : steps[k]] = slots.reshape(steps[k], width)
        filled = np.broadcast_to(np.arange(slots.shape[1]) < size, slots.shape)
        valid[k, : steps[k]] = filled.reshape(steps[k], width)
    return index, valid, steps


def _sgd_chunk(
    model: ClientModel,
    start: torch.Tensor,
    datas: list[ClientData],
    rngs: list[np.random.Generator],
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    loss_term: LossTerm | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`vectorized_sgd` for one chunk of clients; returns (K, d) params and (K,) losses."""
    sizes = np.array([len(data) for data in datas], np.int64)
    index, valid, steps = _schedule(sizes, rngs, epochs, batch_size)
    # One table of the chunk's examples; padding reads a real row (the client's first one).
    offsets = np.minimum(np.cumsum(sizes) - sizes, max(sizes.sum() - 1, 0))
    rows = index + offsets[:, None, None]
    device = model.device
    x = torch.cat([data.x for data in datas])
    y = torch.cat([data.y for data in datas])
    rows_t = torch.from_numpy(rows).to(device)
    valid_t = torch.from_numpy(valid).to(device)
    active = torch.from_numpy(np.arange(index.shape[1]) < steps[:, None]).to(device)

    names = [name for name, _ in model.module.named_parameters()]
    shapes = [param.shape for _, param in model.module.named_parameters()]
    numels = [shape.numel() for shape in shapes]

    def unflatten(flat: torch.Tensor) -> list[torch.Tensor]:
        pieces = torch.split(flat, numels)
        return [piece.view(shape) for piece, shape in zip(pieces, shapes, strict=True)]

    starts = unflatten(start)

    def client_loss(flat: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor, mask: torch.Tensor):
        """One client's minibatch objective (the mean loss over the examples that ``mask``
        keeps, plus ``loss_term``) and, as auxiliary output, the loss alone."""
        params = unflatten(flat)
        output = functional_call(model.module, dict(zip(names, params, strict=True)), (xb,))
        losses = model.loss(output, yb, reduction="none")
        loss = torch.where(mask, losses, 0.0).sum() / mask.sum().clamp(min=1)
        objective = loss if loss_term is None else loss + loss_term(params, starts)
        return objective, loss

    grads_and_losses = vmap(grad_and_value(client_loss, has_aux=True))
    flat = start.expand(len(datas), -1).clone()
    buffer = torch.zeros_like(flat)
    total = torch.zeros(len(datas), device=device)
    model.module.train()
    for t in range(index.shape[1]):
        take = rows_t[:, t]
        grads, (_, losses) = grads_and_losses(flat, x[take], y[take], valid_t[:, t])
        if weight_decay:
            grads = grads.add(flat, alpha=weight_decay)
        live = active[:, t, None]
        if momentum:  # torch.optim.SGD: the buffer starts as the first gradient
            buffer = torch.where(live, grads if t == 0 else buffer * momentum + grads, buffer)
            grads = buffer
        flat = torch.where(live, flat.add(grads, alpha=-lr), flat)
        total += torch.where(live[:, 0], losses, 0.0)
    return flat, total / torch.from_numpy(steps.clip(min=1)).to(device)


def vectorized_sgd(
    model: ClientModel,
    params: np.ndarray,
    datas: list[ClientData],
    rngs: list[np.random.Generator],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    loss_term: LossTerm | None = None,
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`sim.training.sgd.local_sgd` from ``params`` for every client of ``datas`` at once.

    Client ``k`` shuffles with ``rngs[k]`` (one ``permutation`` per epoch, as it would alone) and
    minimises the model's loss plus ``loss_term(params, starting params)`` as local_sgd does.
    Returns the final flat parameters (K, d) and each client's mean minibatch loss (K,).
    Clients run in chunks of ``chunk_size`` (default: as many as fit ``CHUNK_BYTES`` of
    parameter-sized state), grouped by size so that little is padded.
    """
    if len(datas) != len(rngs):
        raise ValueError(f"got {len(datas)} clients but {len(rngs)} generators")
    if chunk_size is None:
        chunk_size = max(1, CHUNK_BYTES // (16 * model.num_params))
    start = torch.tensor(params, dtype=torch.float32, device=model.device)
    final = np.empty((len(datas), model.num_params), np.float32)
    losses = np.empty(len(datas))
    by_size = np.argsort([-len(data) for data in datas], kind="stable")
    for begin in range(0, len(datas), chunk_size):
        chunk = by_size[begin : begin + chunk_size]
        flat, loss = _sgd_chunk(
            model,
            start,
            [datas[k] for k in chunk],
            [rngs[k] for k in chunk],
            epochs,
            batch_size,
            lr,
            momentum,
            weight_decay,
            loss_term,
        )
        final[chunk], losses[chunk] = flat.cpu().numpy(), loss.cpu().numpy()
    return final, losses
