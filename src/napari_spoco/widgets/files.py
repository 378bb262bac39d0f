"""Files: save and load the model, save and open sessions, autosave the annotations."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import QFileDialog, QGridLayout, QLabel, QPushButton, QVBoxLayout, QWidget
from superqt.utils import qdebounced

from ..core.checkpoint import save_checkpoint
from ..core.pretrained import load_model_source
from ..core.session import SessionPair, load_session, save_session, update_session
from ._run import start_worker
from ._state import SpocoState, link_annotation
from ._tooltips import TOOLTIPS

if TYPE_CHECKING:
    import napari

__all__ = ["FilesSection", "autosave_root"]


def autosave_root() -> Path:
    """Folder holding one autosave folder per panel (``NAPARI_SPOCO_AUTOSAVE_DIR`` overrides)."""
    override = os.environ.get("NAPARI_SPOCO_AUTOSAVE_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_data_dir("napari-spoco")) / "autosave"


class FilesSection(QWidget):
    """Model and session files; annotations autosave two seconds after the last stroke."""

    def __init__(self, viewer: napari.viewer.Viewer, state: SpocoState) -> None:
        super().__init__()
        self.viewer, self.state = viewer, state
        self.autosave_folder = autosave_root() / time.strftime(f"%Y%m%d-%H%M%S-{os.getpid()}")
        self.status = QLabel("Annotations autosave while you paint.")
        self.status.setWordWrap(True)
        grid = QGridLayout()
        actions = (
            ("Save model…", "save_model", lambda: self.save_model()),
            ("Load model…", "load_model", lambda: self.load_model()),
            ("Save session…", "save_session", lambda: self.save_session()),
            ("Open session…", "open_session", lambda: self.open_session()),
            ("Restore autosave", "restore_autosave", lambda: self.restore_autosave()),
        )
        for index, (text, key, slot) in enumerate(actions):
            button = QPushButton(text)
            button.setToolTip(TOOLTIPS[key])
            button.clicked.connect(slot)
            grid.addWidget(button, index // 2, index % 2)
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addWidget(self.status)
        state.annotations_edited.connect(self._schedule_autosave)
        state.pairs_changed.connect(self._schedule_autosave)
        self._autosaving = self._pending = False

    # ------------------------------------------------------------------ model
    def save_model(self, path: str | os.PathLike | None = None) -> Path | None:
        """Write the current model (weights, settings, history) to ``path`` (asks if None)."""
        if self.state.training:
            show_info("Stop the training before saving the model.")
            return None
        if self.state.trainer is not None:
            checkpoint = self.state.trainer.checkpoint()
        else:
            checkpoint = self.state.loaded_checkpoint
        if checkpoint is None:
            show_warning("There is no model to save yet: train one first.")
            return None
        path = (
            path or QFileDialog.getSaveFileName(self, "Save model", "model.pt", "Model (*.pt)")[0]
        )
        if not path:
            return None
        try:
            saved = save_checkpoint(path, checkpoint)
        except OSError as error:
            show_warning(f"Could not save the model: {error}")
            return None
        self.status.setText(f"Model saved to {saved}.")
        return saved

    def load_model(self, path: str | os.PathLike | None = None) -> bool:
        """Load a model file; the next training fine-tunes it, Segment applies it."""
        if self.state.training:
            show_info("Stop the training before loading another model.")
            return False
        path = (
            path
            or QFileDialog.getOpenFileName(
                self,
                "Load model",
                "",
                "Model (*.pt *.pth);;bioimage.io package (*.zip *.yaml);;All files (*)",
            )[0]
        )
        if not path:
            return False
        try:
            checkpoint = load_model_source(path)
        except (ValueError, FileNotFoundError) as error:
            show_warning(f"Could not load the model: {error}")
            return False
        self.state.load(checkpoint, path=Path(path))
        model = checkpoint.config.model
        self.status.setText(
            f"Loaded {Path(path).name}: {model.in_channels}-channel {model.spatial_dims}D model, "
            f"{checkpoint.step} steps."
        )
        return True

    # ------------------------------------------------------------------ sessions
    def _contents(self) -> tuple[list[SessionPair], dict[str, Any], dict[str, Any]]:
        pairs, images, annotations = [], {}, {}
        for pair in self.state.pairs():
            source = pair.image.source.path
            placement = {
                "scale": np.asarray(pair.annotation.scale).tolist(),
                "translate": np.asarray(pair.annotation.translate).tolist(),
                "image_scale": np.asarray(pair.image.scale).tolist(),
                "image_translate": np.asarray(pair.image.translate).tolist(),
                "rgb": bool(pair.image.rgb),
            }
            pairs.append(
                SessionPair(
                    image_name=pair.image.name,
                    annotation_name=pair.annotation.name,
                    axes=pair.axes.spec,
                    background_id=pair.background_id,
                    image_source=str(source) if source else None,
                    layer=placement,
                )
            )
            if not source:
                images[pair.image.name] = pair.image.data
            annotations[pair.annotation.name] = np.array(pair.annotation.data)
        return pairs, images, annotations

    def save_session(self, folder: str | os.PathLike | None = None) -> Path | None:
        """Save images (or their paths), annotations, model and history to ``folder``."""
        if self.state.training:
            show_info("Stop the training before saving the session.")
            return None
        pairs, images, annotations = self._contents()
        if not pairs:
            show_warning("Nothing to save yet: create an annotation layer first.")
            return None
        folder = folder or QFileDialog.getSaveFileName(self, "Save session folder", "session")[0]
        if not folder:
            return None
        checkpoint = self.state.trainer.checkpoint() if self.state.trainer else None
        try:
            saved = save_session(
                folder, pairs, images, annotations,
                checkpoint=checkpoint or self.state.loaded_checkpoint,
            )  # fmt: skip
        except (OSError, ValueError) as error:
            show_warning(f"Could not save the session: {error}")
            return None
        self.status.setText(f"Session saved to {saved}.")
        return saved

    def open_session(self, folder: str | os.PathLike | None = None) -> bool:
        """Open a session folder: its images, annotation layers and model."""
        if self.state.training:
            show_info("Stop the training before opening a session.")
            return False
        folder = folder or QFileDialog.getExistingDirectory(self, "Open session folder")
        if not folder:
            return False
        try:
            session = load_session(folder)
        except (OSError, ValueError, KeyError, TypeError) as error:
            show_warning(f"Could not open the session: {error}")
            return False
        # An open layer of the same name is reused only if it holds the same pixels: a
        # different image, or an annotation painted since, is kept and the session's
        # layer is added beside it (napari names it "<name> [1]").
        images: dict[str, Any] = {}
        kept = []
        for pair in session.pairs:
            placement = pair.layer
            pixels = session.images[pair.image_name]
            image = images.get(pair.image_name)
            if image is None:
                image = _open_layer_with(self.viewer, pair.image_name, pixels)
            if image is None:
                image = self.viewer.add_image(
                    pixels, name=pair.image_name,
                    rgb=placement.get("rgb", False), scale=placement.get("image_scale"),
                    translate=placement.get("image_translate"),
                )  # fmt: skip
            images[pair.image_name] = image
            annotation = session.annotations[pair.annotation_name]
            layer = _open_layer_with(self.viewer, pair.annotation_name, annotation)
            if layer is None:
                kept += [pair.annotation_name] if pair.annotation_name in self.viewer.layers else []
                layer = self.viewer.add_labels(
                    annotation, name=pair.annotation_name, scale=placement.get("scale"),
                    translate=placement.get("translate"),
                )  # fmt: skip
            link_annotation(layer, image, pair.axes, background_id=pair.background_id)
        if kept:
            show_info(
                f"Kept the open layer(s) {', '.join(kept)}: they differ from the session's, "
                "which were added beside them."
            )
        self.state.pairs_changed.emit()
        self.state.load(
            session.checkpoint, path=Path(folder) / "model.pt" if session.checkpoint else None
        )
        self.status.setText(f"Opened session {folder} ({len(session.pairs)} annotation layer(s)).")
        return True

    # ------------------------------------------------------------------ autosave
    @qdebounced(timeout=2000)
    def _schedule_autosave(self, *_: Any) -> None:
        self.autosave()

    def autosave(self) -> Any:
        """Write the annotations to this panel's autosave folder in a worker thread."""
        if self._autosaving:
            self._pending = True  # saved again when the running save ends
            return None
        pairs, images, annotations = self._contents()
        if not pairs:
            return None
        self._autosaving, self._pending = True, False
        return start_worker(
            self, update_session, self.autosave_folder, pairs, images, annotations,
            on_return=lambda folder: self.status.setText(
                f"Annotations autosaved at {time.strftime('%H:%M:%S')} to {folder}."
            ),
            on_finish=self._autosaved,
        )  # fmt: skip

    def _autosaved(self) -> None:
        self._autosaving = False
        if self._pending:
            self.autosave()

    def restore_autosave(self) -> bool:
        """Open the most recent autosave of any panel (e.g. after a crash)."""
        root = autosave_root()
        candidates = sorted(
            (p for p in root.glob("*") if (p / "session.json").is_file()),
            key=lambda p: (p / "session.json").stat().st_mtime,
        )
        if not candidates:
            show_info(f"No autosaved session in {root}.")
            return False
        return self.open_session(candidates[-1])


def _open_layer_with(viewer: napari.viewer.Viewer, name: str, data: np.ndarray) -> Any | None:
    """Return the open layer called ``name`` if it holds exactly ``data``, else None.

    Lazy (dask, zarr) layers are not read to compare: they count as different.
    """
    if name not in viewer.layers:
        return None
    layer = viewer.layers[name]
    current = layer.data
    if not isinstance(current, np.ndarray) or current.shape != np.shape(data):
        return None
    return layer if np.array_equal(current, data) else None
