# %% [markdown]
# # Tutorial 2: health records (NHANES) the ehrapy way
#
# Electronic-health-record style data differ from single-cell counts: a few dozen clinical
# variables on very different scales, and many missing values. This tutorial embeds adults
# from the US National Health and Nutrition Examination Survey 2017-2018 (NHANES, bundled in
# `data/`: 8,366 people, 161 numeric variables, 47 % missing) and follows ehrapy's habits:
# `copy=True` calls that return a new AnnData and leave the input alone.
#
# `annumap.tl.umap` accepts ehrapy's `tl.umap` arguments (including `method='rapids'`, an
# alias of the GPU layout), so it can stand in for it. The last section runs the same panel
# through ehrapy 0.15 itself, on an `ehrdata.EHRData`, when ehrapy is installed
# (`pip install ehrapy`, Python >= 3.12); without it that section says so and stops.
#
# Run it from the repository root (`python tutorials/02_ehr_nhanes.py`); figures go to
# `$ANNUMAP_FIGDIR` (default `figures/`).

# %%
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer

import annumap

DATA = next(p for p in (Path("data"), Path("../data")) if p.is_dir())
FIGDIR = Path(os.environ.get("ANNUMAP_FIGDIR", "figures"))
FIGDIR.mkdir(parents=True, exist_ok=True)

nhanes = ad.read_h5ad(DATA / "nhanes_2017_2018.h5ad")
nhanes

# %% [markdown]
# ## A clinical panel of adults
#
# We keep people aged 20 or more and 20 measured variables: body measures, blood pressure,
# blood lipids, glycohemoglobin (HbA1c), blood metals and a few dietary totals.

# %%
panel = [
    "AgeInYearsAtScreening", "BodyMassIndexKgm2", "WaistCircumferenceCm", "WeightKg",
    "StandingHeightCm", "SystolicBloodPres2NdRdgMmHg", "DiastolicBloodPres2NdRdgMmHg",
    "60SecPulse30SecPulse2", "TotalCholesterolMgdl", "DirectHdlcholesterolMgdl",
    "Glycohemoglobin", "BloodLeadUgdl", "BloodCadmiumUgl", "BloodMercuryTotalUgl",
    "BloodSeleniumUgl", "BloodManganeseUgl", "EnergyKcal_DR1TOT", "TotalSugarsGm_DR1TOT",
    "DietaryFiberGm_DR1TOT", "AlcoholGm_DR1TOT",
]  # fmt: skip
age = nhanes.X[:, nhanes.var_names.get_loc("AgeInYearsAtScreening")]
adults = nhanes[age >= 20, panel].copy()
adults.obs = adults.obs[["Gender", "RacehispanicOrigin", "DoctorToldYouHaveDiabetes"]].assign(
    age=age[age >= 20]
)
missing = pd.Series(np.isnan(adults.X).mean(axis=0), index=adults.var_names)
print(f"{adults.n_obs} adults x {adults.n_vars} variables; missing per variable:")
print(missing.sort_values(ascending=False).round(3).head(8).to_string())

# %% [markdown]
# ## Missing values get a clear error
#
# UMAP needs a complete matrix. Rather than dropping people or failing deep inside a kNN
# library, `annumap.pp.neighbors` stops before doing anything and says how many values are
# missing, where, and what to do about it. The AnnData is left exactly as it was.

# %%
try:
    annumap.pp.neighbors(adults, use_rep="X")
except ValueError as err:
    print(f"ValueError: {err}")
assert "neighbors" not in adults.uns

# %% [markdown]
# ## Imputation and scaling
#
# People with most of the panel missing carry little information: we keep those with at most
# a quarter of it missing and impute the rest with the median of each variable (ehrapy offers
# kNN and MissForest imputation too, `ehrapy.pp.knn_impute`, `ehrapy.pp.miss_forest_impute`).
# Blood metals and alcohol are strongly skewed, so they are log-transformed; then every
# variable is centred and scaled to unit variance and clipped at 10 standard deviations,
# like `scanpy.pp.scale(max_value=10)`.

# %%
adults = adults[np.isnan(adults.X).mean(axis=1) <= 0.25].copy()
X = SimpleImputer(strategy="median").fit_transform(adults.X)
skewed = [
    adults.var_names.get_loc(v) for v in panel if v.startswith("Blood") or v == "AlcoholGm_DR1TOT"
]
X[:, skewed] = np.log1p(X[:, skewed])
X = np.clip((X - X.mean(axis=0)) / X.std(axis=0), -10, 10)

# copy-style: a new AnnData holds the processed matrix, the raw one keeps its NaNs
processed = ad.AnnData(X=X.astype(np.float32), obs=adults.obs.copy(), var=adults.var.copy())
processed.layers["raw"] = adults.X.copy()
print(processed)

# %% [markdown]
# ## Neighbours and UMAP with `copy=True`
#
# With 20 variables the search runs on `.X` directly (scanpy's rule: `.X` when it has at most
# 50 variables). Each `copy=True` call returns a new AnnData and leaves its input untouched,
# which makes it easy to compare parameter choices side by side.

# %%
graph = annumap.pp.neighbors(processed, n_neighbors=15, copy=True)
embedded = annumap.tl.umap(graph, min_dist=0.3, copy=True)
assert "neighbors" not in processed.uns and "X_umap" not in graph.obsm
print(embedded)

# %% [markdown]
# ## Diabetes status and age
#
# We colour the embedding by the questionnaire answer "Doctor told you have diabetes"
# (`0`, `1`, `Borderline`), by age, and by HbA1c (the lab value that defines diabetes).
# `annumap.pl.umap` takes `.obs` columns and variable names alike; `layer='raw'` shows the
# measured HbA1c rather than its z-score, and `vmax='p99'` keeps a few extreme values from
# flattening its colour scale.

# %%
axes = annumap.pl.umap(
    embedded,
    color=["DoctorToldYouHaveDiabetes", "age", "Glycohemoglobin"],
    layer="raw",
    title=["doctor told you have diabetes", "age (years)", "HbA1c (%)"],
    palette={"0": "lightsteelblue", "1": "crimson", "Borderline": "orange"},
    vmax=[None, None, "p99"],
    save=FIGDIR / "nhanes_umap.png",
)

# %% [markdown]
# Are people with diabetes close to each other in this space? For each of them, the share of
# their 15 graph neighbours who also report diabetes, against the share in the whole panel:

# %%
status = embedded.obs["DoctorToldYouHaveDiabetes"].astype(str).to_numpy()
D = embedded.obsp["distances"].tocoo()
diabetic = status == "1"
near = diabetic[D.col][diabetic[D.row]].mean()
print(f"diabetes in the panel: {diabetic.mean():.1%}; among neighbours of diabetics: {near:.1%}")

# %% [markdown]
# The graph and the embedding are stored where ehrapy and scanpy look for them
# (`.obsp['connectivities']`, `.uns['neighbors']`, `.obsm['X_umap']`), so `ehrapy.pl.umap`,
# `ehrapy.tl.leiden` or `scanpy.tl.leiden` work on `embedded` as they are.

# %% [markdown]
# ## The same with ehrapy 0.15 and an EHRData
#
# Since 0.15, ehrapy works only on `ehrdata.EHRData`: an AnnData subclass whose `.shape` is
# `(n_obs, n_vars, n_t)` and which can hold 3-D (time-resolved) layers. annumap takes it as
# it takes an AnnData and returns the same class from `copy=True`. Here ehrapy does the
# preprocessing (median imputation, `log1p` of the skewed variables, scaling to unit
# variance; no clipping), annumap the neighbours and the embedding, and `ep.pl.umap` the
# picture.
#
# `ep.pp.neighbors` is scanpy's `pp.neighbors` applied to the EHRData; on this stack
# (ehrapy 0.15, scanpy 1.12, anndata 0.13) it runs, and its graph can be embedded by
# `annumap.tl.umap` too. The cell below times both neighbour searches on the same matrix and
# compares the graphs: for a few thousand people both search exactly, so the graphs agree to
# float32 rounding; scanpy's first call includes numba compiling umap-learn's functions.

# %%
import importlib.util
import time
import warnings

if importlib.util.find_spec("ehrapy") is None:
    print("ehrapy is not installed here: skipping the ehrapy/EHRData section.")
else:
    import ehrapy as ep
    import ehrdata as ed

    edata = ed.EHRData(X=adults.X.copy(), obs=adults.obs.copy(), var=adults.var.copy())
    edata.layers["raw"] = adults.X.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ehrapy's own notices (e.g. on imputed fractions)
        ep.pp.simple_impute(edata, strategy="median")
        ep.pp.log_norm(edata, vars=[panel[i] for i in skewed], offset=1)
        ep.pp.scale_norm(edata)

    start = time.perf_counter()
    annumap.pp.neighbors(edata, n_neighbors=15)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = ep.pp.neighbors(edata, n_neighbors=15, copy=True)
    theirs_s = time.perf_counter() - start
    gap = abs(edata.obsp["connectivities"] - theirs.obsp["connectivities"]).max()
    print(
        f"annumap.pp.neighbors {ours_s:.1f} s, ep.pp.neighbors {theirs_s:.1f} s; "
        f"largest difference between the two graphs: {gap:.2g}"
    )

    annumap.tl.umap(edata, min_dist=0.3)
    print(type(edata).__name__, edata.shape, "->", edata.obsm["X_umap"].shape)
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep.pl.umap(edata, color=["DoctorToldYouHaveDiabetes", "Glycohemoglobin"], show=False)
    plt.savefig(FIGDIR / "nhanes_umap_ehrapy.png", dpi=100, bbox_inches="tight")
    plt.close("all")
