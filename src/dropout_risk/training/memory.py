"""Will a population fit in memory? An estimate of its peak, checked before anything trains."""

from __future__ import annotations

from dropout_risk.errors import ConfigError

_STATE_TENSORS = {"SGD": 1, "Adam": 2, "AdamW": 2}  # optimiser state tensors per parameter (momentum; m and v)
_GIB = 2**30


def population_bytes(k: int, n_features: int, hidden: list[int], batch_size: int, n_train: int,
                     optimizer: str, n_val: int = 0, epochs: int = 0) -> int:
    """Peak bytes of K members: parameters with their gradient, pre-step copy, optimiser state
    and frozen copies; activations of a batch (kept for backward); the gathered batch; each
    epoch's permutations; validation activations and the stored validation probabilities."""
    widths = [n_features, *hidden, 1]
    params = sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    state = _STATE_TENSORS.get(optimizer.rpartition(".")[2], 2)
    per_member = (4 * params * (3 + 2 * state)  # param, grad, copy; state and the frozen copies of both
                  + 4 * batch_size * (n_features + 3 * sum(hidden) + 2)  # batch rows, activations, their grads
                  + 8 * n_train  # the epoch's permutation
                  + 4 * n_val * sum(hidden) + 8 * n_val * epochs  # validation pass, probabilities per epoch
                  # measured, not modelled: peak RSS grew by 21-33 MiB per member of [64, 32] on 14,000 + 3,000
                  # rows (benchmarks/bench_population.py, K = 8..96), ~20 bytes per row and hidden unit
                  + 20 * (n_train + n_val) * sum(hidden))
    return k * per_member


def available_bytes(accelerator: str) -> int | None:
    """Free memory where the population trains (GPU: the device's; else MemAvailable)."""
    if accelerator in ("gpu", "cuda", "auto"):
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_population_memory(k: int, n_features: int, hidden: list[int], batch_size: int, n_train: int,
                            optimizer: str, accelerator: str, n_val: int = 0, epochs: int = 0,
                            available: int | None = None, share: float = 0.8) -> None:
    """Refuse (one line, with the size and the fix) a population needing more than `share` of the
    free memory."""
    need = population_bytes(k, n_features, hidden, batch_size, n_train, optimizer, n_val, epochs)
    free = available if available is not None else available_bytes(accelerator)
    if free is None or need <= share * free:
        return
    fits = max(1, int(share * free // max(need // k, 1)))
    raise ConfigError(f"a population of {k} members of [{', '.join(map(str, hidden))}] needs ~{need / _GIB:.1f} GiB "
                      f"but {free / _GIB:.1f} GiB is free; pass sweep.population_size={fits} (or fewer) to train "
                      "the members in smaller populations")
