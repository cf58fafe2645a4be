"""The data a spec names, loaded as plain numpy arrays matched to the spec's inputs.

    ds = load_dataset(loaded, "train")            # Dataset(arrays={"image": (N,1,8,8) f32, "label": (N,) i64})
    ev = load_dataset(loaded, "eval", ds.stats)   # normalized with the TRAIN split's statistics
    ds, ev = load_train_eval(loaded)              # both, every error of either raised together

Sources that produce (features, labels) — xor, spirals, blobs, digits, csv,
mnist-idx — bind the features to the spec's single float input (reshaped to its
shape when the element count matches) and the labels to its single int64
input. npz binds arrays by input name (or by `keys`), npy by its `arrays`
mapping. images reads a folder with one subfolder per class into the float
[C, H, W] input (converted and resized, pixel values 0..255) and the label
input, and names the classes (`Dataset.classes`); text reads windows of
characters and the character after each (its vocabulary, the classes). Paths are relative to the
spec's folder (`LoadedSpec.base_dir`).

`data.eval: {from_train: 0.1}` holds evaluation samples out of the train
source, after its `limit` (`split`): seeded, and stratified by the label
input's classes unless `stratify: false`. "train" is then the kept part and
"eval" the held-out part, and normalization statistics come from the kept
part only, wherever they are computed (training, netc eval, predict, viz).
`data.augment` (`augment`) changes training samples each epoch — crop, shift,
flip on [C, H, W] inputs, Gaussian noise on any float input — as a pure
function of the arrays and a generator the training loop seeds by (seed,
epoch, chunk); `check_augment` (run by `load_train_eval`) reports what the
spec's inputs cannot take.

Everything that can be wrong with data is reported as a `DataError` with code
E-DATA, the file (and CSV row) where it sits, the spec path (`data.train`) and
a hint — never a traceback. Files are checked against their own headers
(npy, npz, idx) before anything is allocated.

The modules, top down: `load` (the API), `sources` (the registry keyed by
`source:`), one module per source (`generated`, `digits`, `npz`, `npy`,
`csv_files`, `idx`, `images`), `binding` (arrays to inputs, and their checks),
`npy_header` (the .npy check npy and npz share), `dataset` (Dataset, NormStats,
normalizing) and `origin` (where a problem sits).
"""

# importing the readers registers them, in the order of the spec's union of sources
from netc.runtime.data import generated, digits, npz, npy, csv_files, idx, images, text  # noqa: F401  (registration)
from netc.runtime.data.dataset import NORMALIZE_KINDS, Dataset, NormStats, compute_stats
from netc.runtime.data.digits import digits_split
from netc.runtime.data.idx import read_idx
from netc.runtime.data.images import image_files, load_image
from netc.runtime.data.load import load_dataset, load_train_eval, normalization_stats
from netc.runtime.data.origin import CODE
from netc.runtime.data.sources import SOURCES, register_source

__all__ = [
    "CODE", "NORMALIZE_KINDS", "SOURCES", "Dataset", "NormStats", "compute_stats", "digits_split", "image_files",
    "load_dataset", "load_image", "load_train_eval", "normalization_stats", "read_idx", "register_source",
]
