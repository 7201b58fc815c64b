"""Model registry: `get_model(arch, num_classes, in_channels, im_size, mean, std)`.

Every model takes raw [0, 1] images and normalises them itself (`normalize`, constants not saved in the
state dict, so foreign checkpoints load strictly); mean/std None means no normalisation (ZCA-space input).
Parameter names follow torchvision (ResNet/VGG) and MTT (ConvNet), so published weights load.
"""
from models.common import Normalize
from models.convnet import ConvNet
from models.resnet import ResNet
from models.resnet_s import ResNetS
from models.vgg import VGG
from utils import UsageError, load_checkpoint, load_weights, state_dict_of

MODELS = {
    "resnet18": lambda **kw: ResNet("basic", [2, 2, 2, 2], **kw),
    "resnet34": lambda **kw: ResNet("basic", [3, 4, 6, 3], **kw),
    "resnet50": lambda **kw: ResNet("bottleneck", [3, 4, 6, 3], **kw),
    "resnet20s": lambda **kw: ResNetS([3, 3, 3], **kw),
    "vgg16_bn": lambda **kw: VGG("vgg16", **kw),
    "convnet": lambda **kw: ConvNet(depth=3, **kw),
    **{f"convnetd{d}": (lambda d: lambda **kw: ConvNet(depth=d, **kw))(d) for d in range(1, 6)},
}


def canonical_arch(arch: str) -> str:
    key = str(arch).lower()
    if key not in MODELS:
        raise UsageError(f"--arch: unknown model '{arch}' (choose from {', '.join(MODELS)})")
    return key


def get_model(arch: str, num_classes: int, in_channels: int = 3, im_size: int = 32, mean=None, std=None):
    return MODELS[canonical_arch(arch)](num_classes=num_classes, in_channels=in_channels, im_size=im_size,
                                        normalize=Normalize(mean, std))


# ---------------------------------------------------------------------------------------------------------
# model.pt: the weights plus everything needed to rebuild and use them without guessing

def model_record(model, arch, info, mean, std, **extra) -> dict:
    """The model.pt dict (see DESIGN.md): state_dict, arch, dataset facts, normalisation, plus extras
    (split, train_on, epoch, metrics, masks, forget_indices, ...)."""
    return {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "arch": canonical_arch(arch), "dataset": info.name, "num_classes": info.num_classes,
            "in_channels": info.channels, "im_size": info.im_size,
            "norm_mean": list(mean) if mean is not None else None,
            "norm_std": list(std) if std is not None else None, **extra}


MODEL_KEYS = {"state_dict", "arch", "num_classes", "in_channels", "im_size"}  # what makes a dict our model.pt


def is_model_record(obj) -> bool:
    """Whether a loaded checkpoint is our model.pt (model_record's dict) rather than foreign weights."""
    return isinstance(obj, dict) and MODEL_KEYS <= set(obj)


def model_from_record(record: dict, source: str = "checkpoint"):
    """The model a model.pt describes, its weights loaded strictly."""
    model = get_model(record["arch"], record["num_classes"], record["in_channels"], record["im_size"],
                      record.get("norm_mean"), record.get("norm_std"))
    load_weights(model, record["state_dict"], source=source)
    return model


def load_model(path: str, device="cpu"):
    """(model, record) from a model.pt written by model_record; weights_only, strict."""
    record = load_checkpoint(path)
    if not is_model_record(record):
        lacks = sorted(MODEL_KEYS - set(record if isinstance(record, dict) else ()))
        raise UsageError(f"'{path}' is not a mu-wdd model.pt (lacks {lacks}); "
                         "convert foreign weights with scripts/import_checkpoint.py")
    return model_from_record(record, path).to(device), record


# ---------------------------------------------------------------------------------------------------------
# Foreign weights (scripts/import_checkpoint.py, and --mask with a file that is not a model.pt)

def fold_pruning(state: dict):
    """conv.weight_orig * conv.weight_mask -> conv.weight (torch pruning's pairs); returns (state, masks by
    parameter name)."""
    masks = {}
    for key in [k for k in state if k.endswith(".weight_orig")]:
        name = key[: -len("_orig")]
        if name + "_mask" not in state:
            raise UsageError(f"the checkpoint has {key} but no {name}_mask (a torch pruning pair)")
        mask = state.pop(name + "_mask").bool()
        state[name] = state.pop(key) * mask
        masks[name] = mask
    return state, masks


def import_weights(obj, arch: str, info, mean=None, std=None, source: str = "checkpoint"):
    """(model, record) from foreign weights, the model built from `arch` and `info` (the dataset's facts,
    datasets.get_info). Takes a bare state dict (the HF edadaltocg/resnet18_cifar10 file: torchvision resnet18
    names, CIFAR stem), a {'state_dict': ...} checkpoint (Unlearn-Sparse / SalUn), with or without `module.`
    prefixes, and torch pruning's `weight_orig`/`weight_mask` pairs (folded into weights plus record['masks']).
    Normalisation: `mean`/`std` if given, else the checkpoint's in-model `normalize.mean/std` buffers, else the
    dataset's. Keys or shapes that do not fit are one UsageError line naming them."""
    state, masks = fold_pruning(dict(state_dict_of(obj)))
    found = {k: state.pop(f"normalize.{k}", None) for k in ("mean", "std")}
    mean = mean or _stats(found["mean"]) or info.mean
    std = std or _stats(found["std"]) or info.std
    model = get_model(arch, info.num_classes, info.channels, info.im_size, mean, std)
    load_weights(model, state, source=source)
    return model, model_record(model, arch, info, mean, std, **({"masks": masks} if masks else {}))


def _stats(tensor):
    return None if tensor is None else tuple(round(v, 6) for v in tensor.flatten().tolist())
