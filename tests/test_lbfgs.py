"""lightning_modules.lbfgs.LBFGS takes exactly torch.optim.LBFGS's steps, with its options."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lightning_modules.lbfgs import LBFGS, lbfgs_direction


def minimise(optimizer_class: type[torch.optim.LBFGS], steps: int = 6, **options) -> tuple[torch.Tensor, int]:
    """Optimise a non-quadratic least-squares problem; the final point and the evaluations used."""
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(60, 40, generator=generator), torch.randn(60, generator=generator)
    x = torch.zeros(40, requires_grad=True)
    optimizer = optimizer_class([x], **options)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = ((a @ x - b) ** 2).mean() + 0.1 * (x**4).sum()
        loss.backward()
        return loss

    for _ in range(steps):
        optimizer.step(closure)
    return x.detach(), optimizer.state[x]["func_evals"]


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
@pytest.mark.parametrize("history_size", [3, 100])  # 3: the history fills and drops its oldest pairs
def test_lbfgs_takes_the_same_steps_as_torch_lbfgs(line_search_fn, history_size):
    options = {"lr": 1.0, "max_iter": 20, "history_size": history_size, "line_search_fn": line_search_fn}
    ours, our_evaluations = minimise(LBFGS, **options)
    torch_result, torch_evaluations = minimise(torch.optim.LBFGS, **options)
    assert our_evaluations == torch_evaluations
    torch.testing.assert_close(ours, torch_result, rtol=1e-5, atol=1e-6)


def test_lbfgs_stops_at_max_eval_and_tolerances_like_torch_lbfgs():
    options = {"max_iter": 50, "max_eval": 7, "line_search_fn": "strong_wolfe"}
    assert minimise(LBFGS, steps=1, **options)[1] == minimise(torch.optim.LBFGS, steps=1, **options)[1]
    loose = {"tolerance_grad": 1e-2, "tolerance_change": 1e-3}
    assert minimise(LBFGS, **loose)[1] == minimise(torch.optim.LBFGS, **loose)[1]


def test_lbfgs_direction_with_an_empty_history_is_steepest_descent_scaled():
    grad = torch.tensor([1.0, -2.0, 0.5])
    torch.testing.assert_close(lbfgs_direction(grad, [], [], [], 0.5), -0.5 * grad)


def test_lbfgs_direction_satisfies_the_secant_equation_of_the_newest_pair():
    generator = torch.Generator().manual_seed(1)
    hessian = torch.randn(5, 5, generator=generator)
    hessian = hessian @ hessian.T + 5 * torch.eye(5)  # positive definite
    steps = [torch.randn(5, generator=generator) for _ in range(3)]
    changes = [hessian @ s for s in steps]
    rhos = [1.0 / y.dot(s) for s, y in zip(steps, changes, strict=True)]
    h_diag = changes[-1].dot(steps[-1]) / changes[-1].dot(changes[-1])
    # the inverse-Hessian approximation H maps the newest gradient change y onto its step s
    direction = lbfgs_direction(changes[-1], steps, changes, rhos, h_diag)
    torch.testing.assert_close(-direction, steps[-1])


class ScalarReads(TorchDispatchMode):
    """Counts reads of tensor values into Python numbers: each one waits for a CUDA device."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func.overloadpacket.__name__ == "_local_scalar_dense"
        return func(*args, **(kwargs or {}))


def test_lbfgs_direction_reads_no_scalar_whatever_the_history_length():
    pairs = [torch.randn(50) for _ in range(40)]
    rhos = [torch.tensor(0.1) for _ in pairs]
    with ScalarReads() as reads:
        lbfgs_direction(torch.randn(50), pairs, pairs, rhos, torch.tensor(0.5))
    assert reads.count == 0
