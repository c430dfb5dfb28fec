"""The paper's reported numbers (METHOD.md section 6 and the paper's text), as data to print beside ours.

Accuracies in %. A key that is missing means the paper gives no number we can read (Tables 2, 3 and 6 and
Figure 6 are images in our copy of the paper); the results then show "-".
"""

from __future__ import annotations

TABLE1_COLUMNS = ("Natural", "PGD", "CW", "FGSM", "FAB", "NIFGSM")


def _row(*values: float, columns: tuple[str, ...] = TABLE1_COLUMNS) -> dict[str, float]:
    return dict(zip(columns, values, strict=True))


# Table 1, CIFAR-10 with VGG16; keys are the run groups of ibrar.experiments.table1.
TABLE1_CIFAR10: dict[str, dict[str, float]] = {
    "vgg16-cifar10-pgd_at": _row(75.02, 42.45, 37.80, 47.32, 41.03, 47.59),
    "vgg16-cifar10-pgd_at-ibrar": _row(76.22, 45.09, 41.83, 50.53, 46.22, 51.93),
    "vgg16-cifar10-trades": _row(73.44, 43.92, 38.28, 47.94, 41.64, 48.41),
    "vgg16-cifar10-trades-ibrar": _row(80.63, 44.13, 41.81, 51.45, 43.63, 51.69),
    "vgg16-cifar10-mart": _row(73.52, 44.64, 37.58, 48.73, 40.56, 48.95),
    "vgg16-cifar10-mart-ibrar": _row(80.54, 44.34, 41.45, 52.19, 44.72, 51.93),
}

# Table 1, Tiny ImageNet with VGG16 (the paper's Table 1, right half).
TABLE1_TINYIMAGENET: dict[str, dict[str, float]] = {
    "vgg16-tinyimagenet-pgd_at": _row(37.54, 17.73, 13.77, 19.46, 13.76, 22.14),
    "vgg16-tinyimagenet-pgd_at-ibrar": _row(40.25, 18.30, 14.08, 20.07, 14.29, 22.62),
    "vgg16-tinyimagenet-trades": _row(36.80, 18.13, 13.73, 19.57, 14.01, 22.16),
    "vgg16-tinyimagenet-trades-ibrar": _row(39.10, 18.45, 14.19, 20.22, 14.49, 22.87),
    "vgg16-tinyimagenet-mart": _row(34.94, 17.49, 13.06, 18.88, 13.68, 21.23),
    "vgg16-tinyimagenet-mart-ibrar": _row(36.68, 18.05, 13.36, 19.33, 13.81, 22.02),
}

TABLE1: dict[str, dict[str, float]] = {**TABLE1_CIFAR10, **TABLE1_TINYIMAGENET}

# Table 2 (ResNet18 / CIFAR-10, WRN-28-10 / CIFAR-100): an image in our copy of the paper.
TABLE2: dict[str, dict[str, float]] = {}

TABLE4_COLUMNS = ("Natural", "PGD", "NIFGSM", "FGSM")

# Table 4 (no adversarial training); keys are the run groups of ibrar.experiments.table4.
TABLE4: dict[str, dict[str, float]] = {
    "vgg16-1-ce": _row(89.99, 0.10, 0.18, 11.80, columns=TABLE4_COLUMNS),
    "vgg16-2-ib": _row(92.03, 12.39, 13.90, 43.49, columns=TABLE4_COLUMNS),
    "vgg16-3-ce-hx": _row(41.69, 0.16, 0.20, 9.98, columns=TABLE4_COLUMNS),
    "vgg16-4-ce-hy": _row(91.50, 0.06, 0.99, 31.66, columns=TABLE4_COLUMNS),
    "vgg16-5-ce-mask": _row(89.41, 0.16, 0.14, 12.89, columns=TABLE4_COLUMNS),
    "vgg16-6-ibrar": _row(91.50, 35.86, 37.44, 55.92, columns=TABLE4_COLUMNS),
    "resnet18-1-ce": _row(92.19, 0.00, 0.00, 5.22, columns=TABLE4_COLUMNS),
    "resnet18-2-ib": _row(93.32, 3.85, 4.71, 40.46, columns=TABLE4_COLUMNS),
    "resnet18-3-ce-hx": _row(10.00, 10.00, 10.00, 10.00, columns=TABLE4_COLUMNS),
    "resnet18-4-ce-hy": _row(92.75, 0.00, 0.00, 8.90, columns=TABLE4_COLUMNS),
    "resnet18-5-ce-mask": _row(92.41, 0.00, 0.01, 4.26, columns=TABLE4_COLUMNS),
    "resnet18-6-ibrar": _row(93.13, 5.37, 6.09, 39.34, columns=TABLE4_COLUMNS),
}

# Table 3 (one network per IB layer, VGG16 / CIFAR-10): only the layers the paper names as robust.
TABLE3_ROBUST_LAYERS = ("block5", "fc1", "fc2")

# Table 6 (adaptive attack PGD_AD): an image in our copy of the paper.
TABLE6: dict[str, dict[str, float]] = {}

# Figure 2: clean accuracy at the last epoch (the curves themselves are only plotted in the paper).
FIGURE2_CLEAN: dict[str, float] = {
    "ce": 89.88,
    "hbar": 91.93,
    "vib": 90.52,
    "ibrar-rob": 91.33,
    "ibrar-all": 91.97,
}

# Figure 2 without adversarial training, PGD accuracy (the abstract: "reaches an accuracy of 35.86% against PGD
# examples, while using all layers reaches 25.61% accuracy"); HBaR's and VIB's are only plotted.
FIGURE2_PGD: dict[str, float] = {"ibrar-rob": 35.86, "ibrar-all": 25.61}

# The average gain of IB-RAR over the five attacks of Tables 1 and 2 (PGD, CW, FGSM, FAB, NIFGSM), in points.
# Introduction and Conclusions: "improves accuracy on adversarial examples by an average of 2.66% against five
# adversarial attacks for ResNet, wide ResNet, and VGG in Tables 1 and 2"; the abstract, VGG16 on CIFAR-10 alone:
# "improves the accuracy by an average of 3.07% against five adversarial attacks" (Table 1's left half gives it).
TABLES_1_2_AVERAGE_GAIN = 2.66
TABLE1_CIFAR10_AVERAGE_GAIN = 3.07

# Figure 4: the plateau the non-converging SVHN networks sit on (the paper's text), in %.
FIGURE4_PLATEAU = 19.587

# Table 5: top-4 predicted classes of PGD examples per true class (CIFAR-10, VGG16), as (class, count).
TABLE5: dict[str, list[tuple[str, int]]] = {
    "plane": [("bird", 352), ("ship", 247), ("deer", 156), ("truck", 110)],
    "car": [("truck", 681), ("ship", 166), ("plane", 55), ("frog", 24)],
    "bird": [("deer", 260), ("frog", 259), ("dog", 141), ("plane", 120)],
    "cat": [("dog", 415), ("deer", 173), ("bird", 144), ("frog", 134)],
    "deer": [("bird", 285), ("frog", 196), ("cat", 169), ("horse", 147)],
    "dog": [("cat", 299), ("frog", 208), ("bird", 169), ("horse", 143)],
    "frog": [("cat", 411), ("bird", 240), ("deer", 187), ("dog", 63)],
    "horse": [("dog", 335), ("deer", 335), ("truck", 82), ("bird", 75)],
    "ship": [("plane", 280), ("bird", 196), ("truck", 181), ("deer", 116)],
    "truck": [("car", 427), ("ship", 192), ("horse", 135), ("plane", 101)],
}
