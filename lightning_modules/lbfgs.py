"""torch.optim.LBFGS's algorithm, with its two-loop recursion kept on the device.

torch.optim.LBFGS scales each history vector by a 0-dim tensor passed as `alpha=`, which copies
it to the host: two synchronisations per stored pair, 200 per iteration at the default
history_size=100. On a GPU the optimizer then waits on the device hundreds of times for every
function evaluation, and for small problems (neural style at a few hundred pixels) that waiting,
not the network, sets the speed. This class computes the same iterates with device-side scalars;
everything else (line search, tolerances, state) is torch's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim.lbfgs import _strong_wolfe


def lbfgs_direction(grad: torch.Tensor, steps: list[torch.Tensor], grad_changes: list[torch.Tensor],
                    rhos: list[torch.Tensor], h_diag: torch.Tensor | float) -> torch.Tensor:
    """The direction -H·grad of L-BFGS's two-loop recursion (pairs oldest first), without host syncs."""
    q = grad.neg()
    alphas = []
    for s, y, rho in zip(reversed(steps), reversed(grad_changes), reversed(rhos), strict=True):
        alpha = s.dot(q) * rho
        q.addcmul_(y, alpha, value=-1)  # a 0-dim device tensor as factor: no copy to the host
        alphas.append(alpha)
    r = q.mul_(h_diag)
    for s, y, rho, alpha in zip(steps, grad_changes, rhos, reversed(alphas), strict=True):
        beta = y.dot(r) * rho
        r.addcmul_(s, alpha - beta)
    return r


class LBFGS(torch.optim.LBFGS):
    """L-BFGS with the iterates of torch.optim.LBFGS (same options), faster on GPUs: see the module doc."""

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        """Run up to `max_iter` iterations (`max_eval` closure evaluations); return the first loss."""
        closure = torch.enable_grad()(closure)
        group = self.param_groups[0]
        lr, max_iter, max_eval = float(group["lr"]), group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        sign = -1.0 if group.get("maximize", False) else 1.0

        state = self.state[self._params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)
        orig_loss = closure()
        loss = sign * float(orig_loss.detach())
        current_evals = 1
        state["func_evals"] += 1
        flat_grad = self._gather_flat_grad()
        if flat_grad.abs().max() <= tolerance_grad:
            return orig_loss

        d, t = state.get("d"), state.get("t")
        steps, grad_changes, rhos = state.get("old_stps"), state.get("old_dirs"), state.get("ro")
        h_diag, prev_flat_grad = state.get("H_diag"), state.get("prev_flat_grad")
        prev_loss = state.get("prev_loss")
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                d = flat_grad.neg()
                steps, grad_changes, rhos, h_diag = [], [], [], 1.0
            else:
                y = flat_grad.sub(prev_flat_grad)
                s = d.mul(t)
                ys = y.dot(s)
                if ys > 1e-10:  # keep the pair only where the curvature condition holds
                    if len(steps) == group["history_size"]:
                        del steps[0], grad_changes[0], rhos[0]
                    steps.append(s)
                    grad_changes.append(y)
                    rhos.append(1.0 / ys)
                    h_diag = ys / y.dot(y)
                d = lbfgs_direction(flat_grad, steps, grad_changes, rhos, h_diag)
            if prev_flat_grad is None:
                prev_flat_grad = flat_grad.clone(memory_format=torch.contiguous_format)
            else:
                prev_flat_grad.copy_(flat_grad)
            prev_loss = loss

            t = min(1.0, 1.0 / flat_grad.abs().sum()) * lr if state["n_iter"] == 1 else lr
            gtd = flat_grad.dot(d)
            if gtd > -tolerance_change:
                break
            if group["line_search_fn"] is not None:
                if group["line_search_fn"] != "strong_wolfe":
                    raise RuntimeError("only 'strong_wolfe' is supported")
                x_init = self._clone_param()

                def evaluate_along(x: list[torch.Tensor], t: float, d: torch.Tensor
                                   ) -> tuple[float, torch.Tensor]:
                    return self._directional_evaluate(closure, x, t, d)

                loss, flat_grad, t, ls_func_evals = _strong_wolfe(
                    evaluate_along, x_init, t, d, loss, flat_grad, gtd, max_ls=max_eval - current_evals)
                self._add_grad(t, d)
                opt_cond = flat_grad.abs().max() <= tolerance_grad
            else:
                self._add_grad(t, d)
                ls_func_evals = 0
                opt_cond = False
                if n_iter != max_iter:  # the last iteration's loss would go unused
                    with torch.enable_grad():
                        loss = sign * float(closure().detach())
                    flat_grad = self._gather_flat_grad()
                    opt_cond = flat_grad.abs().max() <= tolerance_grad
                    ls_func_evals = 1
            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals

            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if d.mul(t).abs().max() <= tolerance_change or abs(loss - prev_loss) < tolerance_change:
                break

        state.update(d=d, t=t, old_dirs=grad_changes, old_stps=steps, ro=rhos, H_diag=h_diag,
                     prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)
        return orig_loss
