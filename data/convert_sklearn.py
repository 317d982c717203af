#!/usr/bin/python3
"""Converts two small tables that Debian's python3-sklearn ships into the CSV
layout `bnspike run --csv` reads (numeric columns, last column y, one header
line).  Standard library only; the output is deterministic.

    apt-get install -y python3-sklearn
    /usr/bin/python3 data/convert_sklearn.py [SKLEARN_DATA_DIR] [OUT_DIR]

Writes (see data/README.md):
  diabetes-raw.csv     442 x 10 features as shipped + target (regression)
  diabetes.csv         the same, every feature and the target standardized
                       (mean 0, population standard deviation 1)
  breast-cancer.csv    569 x 30 features standardized + label
                       (+1 benign, -1 malignant).  NOT linearly separable
                       through the origin after centering: logistic runs
                       need --ref none (no rho) or square loss.
  wine-0v1.csv         wine classes 0 and 1 only (59 + 71 = 130 samples),
                       13 features standardized on that subset + label
                       (+1 class_0, -1 class_1): separable through the
                       origin after centering (classification)
"""
import csv
import gzip
import math
import os
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 else "/usr/lib/python3/dist-packages/sklearn/datasets/data"
OUT = sys.argv[2] if len(sys.argv) > 2 else os.path.dirname(os.path.abspath(__file__))

DIABETES_COLS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
BC_COLS = [f"{k}_{s}" for s in ("mean", "se", "worst") for k in (
    "radius", "texture", "perimeter", "area", "smoothness", "compactness",
    "concavity", "concave_points", "symmetry", "fractal_dimension")]

WINE_COLS = ["alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium", "total_phenols",
             "flavanoids", "nonflavanoid_phenols", "proanthocyanins", "color_intensity", "hue",
             "od280_od315", "proline"]


def standardize(cols):
    out = []
    for c in cols:
        m = math.fsum(c) / len(c)
        sd = math.sqrt(math.fsum((v - m) ** 2 for v in c) / len(c))
        out.append([(v - m) / sd for v in c])
    return out


def write(name, header, rows):
    path = os.path.join(OUT, name)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for r in rows:
            w.writerow([repr(float(v)) if not isinstance(v, str) else v for v in r])
    os.replace(tmp, path)
    print(f"wrote {path}: {len(rows)} rows x {len(header)} columns")


def main():
    with gzip.open(os.path.join(SRC, "diabetes_data_raw.csv.gz"), "rt") as f:
        X = [[float(v) for v in line.split()] for line in f if line.strip()]
    with gzip.open(os.path.join(SRC, "diabetes_target.csv.gz"), "rt") as f:
        y = [float(line) for line in f if line.strip()]
    assert len(X) == len(y) == 442 and all(len(r) == 10 for r in X)
    write("diabetes-raw.csv", DIABETES_COLS + ["progression"], [r + [t] for r, t in zip(X, y)])
    cols = standardize([list(c) for c in zip(*X)] + [y])
    write("diabetes.csv", DIABETES_COLS + ["progression"], list(zip(*cols)))

    with open(os.path.join(SRC, "breast_cancer.csv")) as f:
        r = csv.reader(f)
        head = next(r)
        n, d = int(head[0]), int(head[1])
        assert head[2:] == ["malignant", "benign"]
        rows = [[float(v) for v in row] for row in r]
    assert len(rows) == n == 569 and all(len(row) == d + 1 for row in rows) and d == 30
    feats = standardize([list(c) for c in zip(*[row[:d] for row in rows])])
    # sklearn's target: 0 = malignant, 1 = benign.
    labels = [1.0 if row[d] == 1 else -1.0 for row in rows]
    write("breast-cancer.csv", BC_COLS + ["label"], [list(fr) + [lab] for fr, lab in zip(zip(*feats), labels)])

    with open(os.path.join(SRC, "wine_data.csv")) as f:
        r = csv.reader(f)
        head = next(r)
        n, d = int(head[0]), int(head[1])
        rows = [[float(v) for v in row] for row in r]
    assert len(rows) == n == 178 and d == 13
    sub = [row for row in rows if row[d] in (0, 1)]
    feats = standardize([list(c) for c in zip(*[row[:d] for row in sub])])
    labels = [1.0 if row[d] == 0 else -1.0 for row in sub]
    write("wine-0v1.csv", WINE_COLS + ["label"], [list(fr) + [lab] for fr, lab in zip(zip(*feats), labels)])


if __name__ == "__main__":
    main()
