"""The best checkpoint: of equal monitored values, the later epoch's is kept and tested."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from callbacks.best_checkpoint import BestCheckpoint


class Scripted(pl.LightningModule):
    """Logs `scores[epoch]` as val/acc; trains nothing of note."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.scores = scores

    def training_step(self, batch, batch_idx):
        return self.w.sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/acc", self.scores[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def best_epoch(checkpoint: ModelCheckpoint, scores: list[float]) -> int:
    loader = torch.utils.data.DataLoader(torch.zeros(2, 1), batch_size=1)
    trainer = pl.Trainer(max_epochs=len(scores), callbacks=[checkpoint], logger=False, accelerator="cpu",
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(Scripted(scores), loader, loader)
    return torch.load(checkpoint.best_model_path, weights_only=False)["epoch"]


@pytest.mark.parametrize(("mode", "scores", "expected"), [
    ("max", [0.5, 0.8, 0.8, 0.7], 2),  # a tie: the later epoch
    ("max", [0.5, 0.9, 0.8, 0.9], 3),
    ("max", [0.5, 0.9, 0.8, 0.85], 1),  # a later worse one does not replace the best
    ("min", [0.9, 0.4, 0.4, 0.6], 2),
])
def test_of_equal_scores_the_later_checkpoint_is_kept(tmp_path, mode, scores, expected):
    assert best_epoch(BestCheckpoint(tmp_path, monitor="val/acc", mode=mode), scores) == expected
    assert len(list(tmp_path.glob("*.ckpt"))) == 1


def test_lightnings_own_checkpoint_keeps_the_first_of_equals(tmp_path):
    assert best_epoch(ModelCheckpoint(tmp_path, monitor="val/acc", mode="max"), [0.5, 0.8, 0.8, 0.7]) == 1


def test_its_state_resumes_from_and_into_lightnings_checkpoint_callback(tmp_path):
    options = {"monitor": "val/acc", "mode": "max", "save_top_k": 1}
    assert BestCheckpoint(tmp_path, **options).state_key == ModelCheckpoint(tmp_path, **options).state_key
