"""Image data: reading labelled sets, deterministic subsets, preprocessing, the demo set.

Nothing here imports torch: the device side uses the same preprocessing and readers.
"""

from .batches import LoadedCrops, load_crops
from .generated import (
    GENERATED_TRAIN_SEED,
    GENERATED_VAL_SEED,
    demo_classes,
    ensure_generated,
    generate_demo_set,
    render_image,
)
from .imagenet import (
    IMAGE_EXTENSIONS,
    LabelledSet,
    Sample,
    SubsetList,
    read_ilsvrc_val,
    read_image_folder,
    read_subset_list,
    read_synset_mapping,
    sha256_file,
    split_per_class,
    stratified_subsets,
    write_subset_list,
)
from .preprocess import (
    BadImageError,
    PreprocessSpec,
    crop_uint8,
    load_rgb,
    normalize,
    preprocess_image,
    resized_size,
)

__all__ = [
    "GENERATED_TRAIN_SEED",
    "GENERATED_VAL_SEED",
    "ensure_generated",
    "IMAGE_EXTENSIONS",
    "BadImageError",
    "LabelledSet",
    "LoadedCrops",
    "PreprocessSpec",
    "Sample",
    "SubsetList",
    "crop_uint8",
    "demo_classes",
    "generate_demo_set",
    "load_crops",
    "load_rgb",
    "normalize",
    "preprocess_image",
    "read_ilsvrc_val",
    "read_image_folder",
    "read_subset_list",
    "read_synset_mapping",
    "render_image",
    "resized_size",
    "sha256_file",
    "split_per_class",
    "stratified_subsets",
    "write_subset_list",
]
