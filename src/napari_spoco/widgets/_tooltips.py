"""Tooltips of the panel's controls that are not config settings, keyed by control.

Settings of the config classes carry their tooltips in ``core/settings.py``, which
the command line's help shares. Kept in one place so wording stays consistent; a
test checks that every control of the panel has one.
"""

from ..core.recipe import TOUCHING_FRACTION
from ..core.settings import AUGMENT

TOOLTIPS: dict[str, str] = {
    # Annotate
    "image": "The image to annotate and train on.",
    "axes": (
        "What the image's axes are: T = time points (each trained and segmented on its own), "
        "C = channels, Z, Y, X. YXC is an RGB image."
    ),
    "annotation": (
        "Labels layer with your sparse annotation: every painted object has its own label; "
        "0 means 'not annotated' (not 'background')."
    ),
    "new_layer": "Add an empty annotation layer that fits the image and select the brush.",
    "new_object": (
        "Select the next free label and the brush: paint one whole object, then press again "
        "for the next. A few objects spread over the image beat many in one corner."
    ),
    "background": (
        "Select the background label and the brush: a few strokes between objects teach the "
        "network what background looks like (optional, but it sharpens the foreground)."
    ),
    "pairs": "Image/annotation pairs; ticked ones are used when you press Train.",
    # Train
    "model_choice": (
        "What training starts from: the built-in nuclei generalist (Segment works with it "
        "before you paint), a new network (small is fastest on a CPU), or a saved model "
        "file (transfer learning; fine-tuning uses a tenth of a new network's learning rate)."
    ),
    "device": "Where to train: a CUDA GPU, Apple's MPS, or the CPU.",
    "object_diameter": (
        "Typical object diameter in pixels. Images are resized so objects fit the network "
        "(results are resized back). 'auto' measures your annotated objects."
    ),
    "preview_every": "Seconds between live previews of the current view while training (0: off).",
    "segment_when_done": "Segment the whole image as soon as training ends.",
    "patch_size": "Side of the square training patches (Y and X), in pixels after resizing.",
    "patch_depth": "Depth (Z) of the training patches for 3D images.",
    "objects_touch": (
        "Whether your objects touch each other (cells in a sheet, tissue). Then the pixels "
        "next to a painted object may be another object, and are not taught as background, "
        "and training runs longer to separate them. 'auto' decides from your painting: "
        f"they touch when {TOUCHING_FRACTION:.0%} of the painted objects share a border "
        "with another."
    ),
    "triplet_on": (
        "Apply the triplet term to the embedding, or to a projection of the deepest "
        "features (a new network gets that projection)."
    ),
    "train": "Train (or continue training) on the ticked annotations in the background.",
    "stop": "Stop after the current step; the model keeps what it learned.",
    "reset": "Forget the current network and start the next training from scratch.",
    # Segment
    "segment_image": "The image to segment (any open image the model fits).",
    "segment_scope": "Segment the current time point only or every time point.",
    "augment": AUGMENT,
    "method": (
        "Clustering of the embeddings: mutex watershed (fast, default), HDBSCAN, mean shift, "
        "or consistency clustering (mean shift checked against the teacher)."
    ),
    "foreground": (
        "Where the foreground comes from: the network's foreground head, the embedding "
        "(largest cluster = background) or nowhere."
    ),
    "raw_embeddings": "Also add the raw embedding channels as a hidden layer.",
    "predict": "Run the network on the whole image (tiled, in the background) and cluster it.",
    "recluster": "Cluster the cached embeddings again with the settings above.",
    # Correct
    "click_accept": (
        "While on, clicking an instance in the instances layer copies it into the annotation "
        "as a new object. Keys on the instances layer: A accept, D delete, R merge into the "
        "selected label."
    ),
    "doubts": (
        "The instances most likely wrong, worst first, and why: 'may hold several objects' "
        "(its pixels disagree, or it is much larger than your painted objects), "
        "'may be a piece of an object', 'unlike the others in shape', 'unsure border', "
        "'the network is unsure here', or "
        "'possibly a missed object' (foreground without an instance: paint it). Double-click "
        "to go there. The 'uncertainty' layer shows the same per pixel."
    ),
    "goto": "Centre and zoom the view on the chosen instance.",
    "accept_doubt": "Copy the chosen instance into the annotation as a new object.",
    "delete_doubt": "Remove the chosen instance from the prediction.",
    "merge_doubt": (
        "Give the chosen instance the instances layer's selected label (pick the instance to "
        "merge into with the colour picker first)."
    ),
    "accept_all": (
        "Copy every predicted instance that does not touch your painting into the annotation."
    ),
    # Files
    "save_model": "Save the current model (weights, settings and training history) to a file.",
    "load_model": "Load a saved model; press Train to fine-tune it or Segment to apply it.",
    "save_session": (
        "Save images (or their file paths), annotations, model and history to a folder."
    ),
    "open_session": "Re-open a saved session folder.",
    "restore_autosave": "Re-open the last automatic save of this panel's annotations.",
}
