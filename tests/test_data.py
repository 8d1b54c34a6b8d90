"""Data sets on tiny files written in the real formats, the tensor transforms, and make_loader."""
import os
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from groupsnn import data
from groupsnn.data import folder
from groupsnn.data import transforms as T
from groupsnn.data.cifar import CIFAR10_MEAN, CIFAR10_STD, cifar_transform

REAL_CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GROUPSNN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ---- CIFAR python pickles ------------------------------------------------------------------------

def write_batch(path: Path, images: np.ndarray, labels: list, label_key: bytes) -> None:
    """A batch as the CIFAR site ships it: a protocol-2 pickle of a dict with bytes keys."""
    batch = {b"batch_label": b"tiny", b"data": images.reshape(len(images), -1), label_key: labels,
             b"filenames": [b"%d.png" % i for i in range(len(images))]}
    path.write_bytes(pickle.dumps(batch, protocol=2))


def random_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


@pytest.fixture
def cifar10_dir(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for i in range(1, 6):
        write_batch(root / f"data_batch_{i}", random_images(4, i), [i, i + 1, i + 2, i + 3], b"labels")
    write_batch(root / "test_batch", random_images(3, 0), [9, 0, 1], b"labels")
    return tmp_path


def test_cifar10_reads_the_python_batches(cifar10_dir):
    splits = data.load("cifar10", data_dir=str(cifar10_dir))
    assert (len(splits.train), len(splits.test), splits.num_classes, splits.input_shape) == (20, 3, 10, (3, 32, 32))
    assert splits.train.images.dtype == torch.uint8
    assert splits.train.labels.tolist()[:8] == [1, 2, 3, 4, 2, 3, 4, 5]
    x, y = splits.test[0]
    raw = torch.from_numpy(random_images(3, 0)[0]).float() / 255
    mean, std = torch.tensor(CIFAR10_MEAN).view(3, 1, 1), torch.tensor(CIFAR10_STD).view(3, 1, 1)
    assert x.dtype == torch.float32 and int(y) == 9
    torch.testing.assert_close(x, (raw - mean) / std)


def test_cifar10_augmentation_keeps_shape(cifar10_dir):
    train = data.load("cifar10", data_dir=str(cifar10_dir), augment=True).train
    x, _ = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32


def test_cifar_augmentations_by_name():
    crop_flip = cifar_transform(CIFAR10_MEAN, CIFAR10_STD, "crop-flip").transforms
    qcfs = cifar_transform(CIFAR10_MEAN, CIFAR10_STD, True).transforms
    assert [type(t) for t in crop_flip] == [T.RandomCrop, T.RandomHorizontalFlip, T.ToFloat, T.Normalize]
    assert [type(t) for t in qcfs] == [type(t) for t in cifar_transform(CIFAR10_MEAN, CIFAR10_STD, "autoaugment").transforms]
    assert any(isinstance(t, T.AutoAugment) for t in qcfs) and isinstance(qcfs[-1], T.Cutout)
    with pytest.raises(ValueError, match="unknown augmentation 'mixup'; choose one of autoaugment, crop-flip"):
        cifar_transform(CIFAR10_MEAN, CIFAR10_STD, "mixup")


def test_cifar100_reads_fine_labels(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    write_batch(root / "train", random_images(5, 1), [0, 99, 50, 3, 7], b"fine_labels")
    write_batch(root / "test", random_images(2, 2), [42, 98], b"fine_labels")
    splits = data.load("cifar100", data_dir=str(tmp_path))
    assert (len(splits.train), len(splits.test), splits.num_classes) == (5, 2, 100)
    assert splits.train.labels.tolist() == [0, 99, 50, 3, 7]


@pytest.mark.parametrize("name, folder_name", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_missing_cifar_names_both_layouts_it_reads(tmp_path, name, folder_name):
    with pytest.raises(FileNotFoundError, match=f"expected .*{folder_name}.*cs.toronto.edu.* or class folders of "
                                                r"images, .*train/ .*test/.*train\.tar\.gz.*test\.tar\.gz") as info:
        data.load(name, data_dir=str(tmp_path))
    assert "\n" not in str(info.value)


def test_cifar10_reads_the_python_batches_when_data_dir_is_their_folder(cifar10_dir):
    inside = data.load("cifar10", data_dir=str(cifar10_dir / "cifar-10-batches-py"))
    assert torch.equal(inside.train.images, data.load("cifar10", data_dir=str(cifar10_dir)).train.images)
    (cifar10_dir / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="missing: test_batch"):
        data.load("cifar10", data_dir=str(cifar10_dir / "cifar-10-batches-py"))


def test_cifar_refuses_pickles_that_run_code(cifar10_dir):
    (cifar10_dir / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(os.system))
    with pytest.raises(ValueError, match="refusing to load posix.system"):
        data.load("cifar10", data_dir=str(cifar10_dir))


# ---- class-per-folder trees ------------------------------------------------------------------

CLASSES = ["cat", "airplane", "dog"]  # written unsorted: the class index is the rank of the sorted name


def write_tree(root: Path, split: str, per_class: int = 3, classes: list = CLASSES) -> None:
    """PNGs whose constant colour encodes (class, index); plus one JPEG per class."""
    for c, name in enumerate(classes):
        (root / split / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (32, 32), (10 * c, i, 200)).save(root / split / name / f"{i:04d}.png")
        Image.new("RGB", (32, 32), (0, 0, 0)).save(root / split / name / "extra.jpg")


def write_archive(root: Path, split: str) -> Path:
    archive = root / f"{split}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / split, arcname=split)
    return archive


@pytest.fixture
def tree_dirs(tmp_path):
    """The same tiny CIFAR-like data set as plain folders and as .tar.gz archives."""
    folders, archives = tmp_path / "folders", tmp_path / "archives"
    for split in ("train", "test"):
        write_tree(folders, split)
        write_tree(archives, split)
        write_archive(archives, split)
        os.rename(archives / split, archives / f"{split}-unpacked")  # leave only the archive
    return folders, archives


def test_folder_tree_labels_follow_sorted_class_names(tree_dirs):
    splits = data.load("cifar10-folder", data_dir=str(tree_dirs[0]))
    train = splits.train
    assert train.classes == sorted(CLASSES) and splits.num_classes == 3 and splits.input_shape == (3, 32, 32)
    assert train.images.shape == (12, 3, 32, 32) and train.images.dtype == torch.uint8
    pngs = train.images[:, 2, 0, 0] == 200  # the JPEGs are black
    assert pngs.sum() == 9
    for red, label in zip(train.images[pngs, 0, 0, 0].tolist(), train.labels[pngs].tolist()):
        assert train.classes[label] == CLASSES[red // 10]


def test_archive_and_folder_give_the_same_data(tree_dirs):
    from_folder = data.load("cifar10-folder", data_dir=str(tree_dirs[0]))
    from_archive = data.load("cifar10-folder", data_dir=str(tree_dirs[1]))
    for a, b in [(from_folder.train, from_archive.train), (from_folder.test, from_archive.test)]:
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.classes == b.classes


def test_archive_cache_is_reused_then_invalidated(tree_dirs, private_cache, monkeypatch):
    decoded = []
    decode = folder.decode_image_tree
    monkeypatch.setattr(folder, "decode_image_tree", lambda source: decoded.append(source) or decode(source))
    archives = tree_dirs[1]

    first = data.load("cifar10-folder", data_dir=str(archives))
    assert len(decoded) == 2 and len(list(private_cache.glob("*.pt"))) == 2
    again = data.load("cifar10-folder", data_dir=str(archives))
    assert len(decoded) == 2 and torch.equal(first.train.images, again.train.images)

    Image.new("RGB", (32, 32)).save(archives / "train-unpacked" / "dog" / "new.png")
    os.rename(archives / "train-unpacked", archives / "train")
    write_archive(archives, "train")  # a changed archive: new size and mtime
    os.rename(archives / "train", archives / "train-unpacked")
    changed = data.load("cifar10-folder", data_dir=str(archives))
    assert len(decoded) == 3 and len(changed.train) == len(first.train) + 1


TEN_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.mark.parametrize("layout", ["folders", "archives"])
def test_cifar10_reads_image_folders_and_their_archives(tmp_path, layout):
    """The layout of the project's CIFAR-10 copy (class folders, or train.tar.gz and test.tar.gz)."""
    for split in ("train", "test"):
        write_tree(tmp_path, split, per_class=2, classes=TEN_CLASSES)
        if layout == "archives":
            write_archive(tmp_path, split)
            os.rename(tmp_path / split, tmp_path / f"{split}-unpacked")
    splits = data.load("cifar10", data_dir=str(tmp_path), augment=True)
    assert (len(splits.train), len(splits.test), splits.num_classes, splits.input_shape) == (30, 30, 10, (3, 32, 32))
    assert splits.train.classes == TEN_CLASSES and splits.test.labels.bincount().tolist() == [3] * 10
    folder_reader = data.load("cifar10-folder", data_dir=str(tmp_path))
    assert torch.equal(splits.test.images, folder_reader.test.images)
    torch.testing.assert_close(splits.test[5][0], folder_reader.test[5][0])  # same normalisation
    assert splits.train[0][0].shape == (3, 32, 32)  # augmented


def test_cifar_prefers_the_python_batches_and_checks_the_class_count(cifar10_dir, tree_dirs):
    for split in ("train", "test"):
        write_tree(cifar10_dir, split, classes=TEN_CLASSES)
    assert len(data.load("cifar10", data_dir=str(cifar10_dir)).train) == 20  # the pickles, not the 40 PNGs
    with pytest.raises(ValueError, match="holds image folders of 3 classes, not the 10 .* cifar10-folder"):
        data.load("cifar10", data_dir=str(tree_dirs[1]))
    with pytest.raises(ValueError, match="holds image folders of 3 classes, not the 100 "):
        data.load("cifar100", data_dir=str(tree_dirs[0]))


def test_missing_folder_layout_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train/ .*test/.*train\.tar\.gz.*test\.tar\.gz") as info:
        data.load("cifar10-folder", data_dir=str(tmp_path))
    assert "\n" not in str(info.value)


def test_a_damaged_image_is_named_in_folders_and_archives(tree_dirs):
    folders, archives = tree_dirs
    (folders / "train" / "cat" / "0001.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=f"^{folders / 'train/cat/0001.png'} is not a readable image") as info:
        data.load("cifar10-folder", data_dir=str(folders))
    assert "\n" not in str(info.value)
    os.rename(folders / "train", archives / "train")  # now with the damaged PNG inside
    os.remove(archives / "train.tar.gz")
    write_archive(archives, "train")
    os.rename(archives / "train", archives / "train-damaged")
    with pytest.raises(ValueError, match=f"^train/cat/0001.png in {archives / 'train.tar.gz'} is not a readable"):
        data.load("cifar10-folder", data_dir=str(archives))


def test_a_truncated_image_is_named_when_an_image_folder_item_is_read(tmp_path):
    for name in ("n01", "n02"):
        (tmp_path / "train" / name).mkdir(parents=True)
        Image.new("RGB", (40, 30), (1, 2, 3)).save(tmp_path / "train" / name / "a.JPEG")
    damaged = tmp_path / "train" / "n02" / "a.JPEG"
    damaged.write_bytes(damaged.read_bytes()[:200])
    dataset = folder.ImageFolder(tmp_path / "train")
    assert dataset[0][0].shape == (3, 30, 40)
    with pytest.raises(ValueError, match=f"^{damaged} is not a readable image"):
        dataset[1]


def test_imagenet_folder_decodes_lazily_at_224(tmp_path):
    for split in ("train", "val"):
        for name in ("n01", "n02"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (300, 260), (1, 2, 3)).save(tmp_path / split / name / "a.JPEG")
    splits = data.load("imagenet", data_dir=str(tmp_path), augment=True)
    assert splits.num_classes == 2 and splits.input_shape == (3, 224, 224)
    for dataset in (splits.train, splits.test):
        x, y = dataset[1]
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and y == 1
    with pytest.raises(FileNotFoundError, match="train/<class>"):
        data.load("imagenet", data_dir=str(tmp_path / "nowhere"))


@pytest.mark.skipif(not (REAL_CIFAR10 / "test.tar.gz").exists(), reason=f"no real CIFAR-10 at {REAL_CIFAR10}")
def test_real_cifar10_test_archive():
    start = time.perf_counter()
    tree = folder.load_image_tree(REAL_CIFAR10 / "test.tar.gz")  # a fresh decode: the cache is private
    seconds = time.perf_counter() - start
    print(f"decoded {len(tree['labels'])} images in {seconds:.2f} s ({len(tree['labels']) / seconds:,.0f} images/s)")
    assert tree["images"].shape == (10_000, 3, 32, 32) and tree["images"].dtype == torch.uint8
    assert tree["classes"] == ["airplane", "automobile", "bird", "cat", "deer",
                               "dog", "frog", "horse", "ship", "truck"]
    assert tree["labels"].bincount().tolist() == [1000] * 10


@pytest.mark.skipif(not (REAL_CIFAR10 / "test.tar.gz").exists(), reason=f"no real CIFAR-10 at {REAL_CIFAR10}")
def test_cifar10_takes_the_projects_copy(monkeypatch):
    """``--data cifar10 --data-dir ../shared/data/cifar10`` reads its archives (decoding mocked: fast)."""
    sources = []
    tree = {"images": torch.zeros(10, 3, 32, 32, dtype=torch.uint8), "labels": torch.arange(10), "classes": TEN_CLASSES}
    monkeypatch.setattr(folder, "load_image_tree", lambda source: sources.append(source) or tree)
    assert data.load("cifar10", data_dir=str(REAL_CIFAR10)).num_classes == 10
    assert sources == [REAL_CIFAR10 / "train.tar.gz", REAL_CIFAR10 / "test.tar.gz"]


def test_class_balanced_subset_takes_the_first_of_each_class_in_order():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 1, 0])
    subset = data.class_balanced_subset(torch.utils.data.TensorDataset(torch.arange(10), labels), per_class=2)
    assert subset.indices == [0, 1, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="per_class <= 3"):
        data.class_balanced_subset(torch.utils.data.TensorDataset(torch.arange(10), labels), per_class=4)


def test_fixed_order_is_a_seeded_permutation_of_all_samples():
    dataset = torch.utils.data.TensorDataset(torch.arange(100))
    order = data.fixed_order(dataset).indices
    assert sorted(order) == list(range(100)) and order != list(range(100))
    assert data.fixed_order(dataset).indices == order and data.fixed_order(dataset, seed=1).indices != order


def test_class_balanced_subset_of_an_image_folder_reads_no_image(tmp_path, monkeypatch):
    for name, label in [("a", 0), ("b", 0), ("c", 1), ("d", 1), ("e", 1)]:
        (tmp_path / f"class{label}").mkdir(exist_ok=True)
        (tmp_path / f"class{label}" / f"{name}.jpg").write_bytes(b"not decoded")
    images = folder.ImageFolder(tmp_path)
    monkeypatch.setattr(folder.ImageFolder, "__getitem__", lambda self, i: pytest.fail("decoded an image"))
    assert data.class_balanced_subset(images, per_class=2).indices == [0, 1, 2, 3]


# ---- MNIST-1D ---------------------------------------------------------------------------------

def test_mnist1d_is_generated_then_cached(private_cache):
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    splits = data.load("mnist1d")
    assert np.random.rand() == expected_next  # the global RNG is left as it was
    x, y = splits.train.tensors
    assert x.shape == (4000, 1, 40) and x.dtype == torch.float32 and y.dtype == torch.long
    assert splits.test.tensors[0].shape == (1000, 1, 40) and splits.num_classes == 10
    assert set(y.tolist()) == set(range(10))
    assert list(private_cache.glob("mnist1d-*.pt"))
    assert torch.equal(data.load("mnist1d").train.tensors[0], x)


# ---- transforms ----------------------------------------------------------------------------------

def image(seed: int = 0, size=(32, 32)) -> torch.Tensor:
    return torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def seeded(transform, img, seed=0):
    return transform(img, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("transform", [
    T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.Cutout(16), T.AutoAugment(),
    T.RandomResizedCrop(24), T.Compose([T.RandomCrop(32, 4), T.AutoAugment(), T.ToFloat(), T.Cutout(8)]),
])
def test_random_transforms_are_reproducible_under_a_seed(transform):
    img = image()
    assert torch.equal(seeded(transform, img), seeded(transform, img))
    outputs = {seeded(transform, img, seed).numpy().tobytes() for seed in range(8)}
    assert len(outputs) > 1


def test_random_crop_shifts_within_the_padding():
    out = seeded(T.RandomCrop(32, padding=4), image())
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    padded = F.pad(image(), [4] * 4)
    assert any(torch.equal(out, padded[..., i:i + 32, j:j + 32]) for i in range(9) for j in range(9))


def test_flip_and_cutout():
    img = image()
    assert torch.equal(T.RandomHorizontalFlip(p=1.0)(img), img.flip(-1))
    out = seeded(T.Cutout(16), torch.full((3, 32, 32), 7))
    holes = (out == 0).all(0)
    assert holes.any() and holes.sum() <= 16 * 16 and (out[:, ~holes] == 7).all()


def test_normalize():
    x = T.Compose([T.ToFloat(), T.Normalize([0.5] * 3, [0.25] * 3)])(torch.full((3, 2, 2), 255, dtype=torch.uint8))
    torch.testing.assert_close(x, torch.full((3, 2, 2), 2.0))


def test_resize_center_crop_and_random_resized_crop_shapes():
    img = image(size=(60, 90))
    assert T.Resize(40)(img).shape == (3, 40, 60)
    assert T.CenterCrop(32)(T.Resize(40)(img)).shape == (3, 32, 32)
    for seed in range(5):
        out = seeded(T.RandomResizedCrop(24), img, seed)
        assert out.shape == (3, 24, 24) and out.dtype == torch.uint8


@pytest.mark.parametrize("name", sorted(T.AUGMENT_OPS))
def test_every_autoaugment_op_runs_at_every_magnitude(name):
    img = image()
    bins = range(10) if T.AUGMENT_OPS[name][1] is not None else [None]
    for magnitude_bin in bins:
        for negate in (False, True):
            out = T.apply_op(img, name, magnitude_bin, negate)
            assert out.shape == img.shape and out.dtype == torch.uint8


def test_autoaugment_policy_uses_known_ops():
    assert len(T.CIFAR10_POLICY) == 25
    assert {op for sub in T.CIFAR10_POLICY for op, _, _ in sub} <= set(T.AUGMENT_OPS)


def test_autoaugment_op_semantics():
    img = image()
    assert torch.equal(T.apply_op(img, "Invert"), 255 - img)
    assert torch.equal(T.apply_op(img, "Posterize", 9), img & 0xF0)  # bin 9 keeps 4 bits
    assert torch.equal(T.apply_op(img, "Solarize", 9), 255 - img)  # threshold 0 inverts everything
    assert T.apply_op(img // 4 + 60, "AutoContrast").amax() == 255
    assert T.apply_op(img, "Brightness", 0).equal(img)  # magnitude 0 is the identity
    dot = torch.zeros(1, 8, 8, dtype=torch.uint8)
    dot[0, 2, 2] = 255
    moved = T.apply_op(dot, "TranslateX", 9)  # 150/331 of the width: 3 pixels
    assert moved[0, 2, 5] == 255 and moved.sum() == 255


# ---- make_loader ---------------------------------------------------------------------------------

def order(loader):
    return torch.cat([y for _, y in loader]).tolist()


def test_loader_is_reproducible_and_drops_a_ragged_training_batch():
    dataset = torch.utils.data.TensorDataset(torch.zeros(10, 1), torch.arange(10))
    train = data.make_loader(dataset, batch_size=4, train=True, seed=1)
    assert train.num_workers == 0 and len(train) == 2
    assert order(train) == order(data.make_loader(dataset, 4, train=True, seed=1))
    assert order(train) != order(data.make_loader(dataset, 4, train=True, seed=2))
    assert order(data.make_loader(dataset, 4, train=False)) == list(range(10))
    assert len(data.make_loader(dataset, batch_size=16, train=True)) == 1  # never zero batches


def test_loader_augmentation_is_reproducible_with_workers(cifar10_dir):
    train = data.load("cifar10", data_dir=str(cifar10_dir), augment=True).train
    batches = [next(iter(data.make_loader(train, 8, train=True, workers=1, seed=3)))[0] for _ in range(2)]
    assert torch.equal(*batches)


def test_distributed_loader_shards_the_data(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        dataset = torch.utils.data.TensorDataset(torch.arange(6))
        loader = data.make_loader(dataset, 2, train=True, distributed=True, seed=0)
        assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
        assert sorted(torch.cat([x for (x,) in loader]).tolist()) == list(range(6))
    finally:
        dist.destroy_process_group()
