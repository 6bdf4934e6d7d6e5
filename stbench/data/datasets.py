"""Dataset registrations: built-in generators, the shared small real datasets and the papers' datasets.

Every dataset states ``mask_zeros`` (no default): true where a 0 reading means "missing" (loop
detectors report 0 when they fail, so the traffic references ignore zero targets), false where 0 is a
real value (weather, air quality, charging volumes).

``defaults`` carry per-dataset protocol settings from the STemDist appendix: ``batch_size``,
``paper_epochs`` (training epochs in the paper) and the chronological ``split`` (train, val, test).
"""
from __future__ import annotations

from functools import partial

from stbench.data.catalog import DatasetSpec, register_dataset
from stbench.data.native import URBANEV_HINT, prepare_largest, prepare_urbanev, prepare_weather
from stbench.data.prepare import (prepare_beijing_pm25, prepare_charged, prepare_era5_uk, prepare_los_loop,
                                  prepare_pems, prepare_sz_taxi)
from stbench.data.synthetic import synthetic_traffic, synthetic_weather

SPLIT = [0.6, 0.2, 0.2]
RELEASE_HINT = "a folder with train.npz/val.npz/test.npz as released by the STemDist authors"
LARGEST_HINT = ("LargeST's files: a folder with ca_his_raw_<year>.h5, ca_meta.csv, ca_rn_adj.npy (or the "
                "area's own), or " + RELEASE_HINT)
WEATHER_HINT = "GRIB/NetCDF file(s) or a folder of them (or " + RELEASE_HINT + ")"


def _defaults(batch_size: int = 64, paper_epochs: int = 100) -> dict:
    return {"batch_size": batch_size, "paper_epochs": paper_epochs, "split": list(SPLIT)}


def _register_builtins() -> None:
    register_dataset(DatasetSpec(
        "synthetic-weather", "gridded weather with diurnal cycle and advected anomalies (built in)",
        generate=synthetic_weather, defaults=_defaults()), family="synthetic")
    register_dataset(DatasetSpec(
        "synthetic-traffic", "road-graph speeds with rush hours, spreading congestion, missing bursts "
        "(built in)", generate=synthetic_traffic, defaults=_defaults()), family="synthetic")


def _register_shared() -> None:
    shared = [
        ("los-loop", "traffic", "LOS-LOOP: one week of Los Angeles loop speeds, 207 sensors, 5 min",
         prepare_los_loop, "the LOS-LOOP folder (los_speed.csv, los_adj.csv)"),
        ("sz-taxi", "traffic", "SZ-TAXI: Shenzhen taxi speeds on 156 roads, 15 min",
         prepare_sz_taxi, "the SZ-TAXI folder (SZ_taxi.npz, SZ_taxi.csv)"),
        ("era5-uk-t2m", "weather", "ERA5 2 m temperature over the UK, 33x49 grid, hourly",
         prepare_era5_uk, "the ERA5-UK-T2M folder (era5-2mt-2019-03-uk.t2m.derived.npz)"),
        ("beijing-pm25", "air", "Beijing PM2.5 at 36 stations, hourly, ~13% missing",
         prepare_beijing_pm25, "the BEIJING-PM25 folder (pm25_ground.txt, pm25_latlng.txt)"),
    ]
    for city, label in (("SPO", "Sao Paulo"), ("MEL", "Melbourne"), ("JHB", "Johannesburg")):
        shared.append((f"charged-{city.lower()}", "ev", f"CHARGED {label}: hourly EV charging volume",
                       partial(prepare_charged, city=city),
                       f"the CHARGED/{city} folder (or the CHARGED folder)"))
    for name, family, description, prepare, hint in shared:
        register_dataset(DatasetSpec(name, description, prepare=prepare, source_hint=hint,
                                     defaults=_defaults()), family=family)


def _register_papers() -> None:
    release = [
        ("gba", "traffic", "LargeST GBA (Greater Bay Area), 2352 sensors: LargeST files or the PatchSTG release",
         dict(target_name="flow", freq_minutes=15, mask_zeros=True), 256, 400),
        ("gla", "traffic", "LargeST GLA (Greater Los Angeles), 3834 sensors: LargeST files or the PatchSTG "
                           "release", dict(target_name="flow", freq_minutes=15, mask_zeros=True), 128, 400),
        ("ca", "traffic", "LargeST CA (California), 8600 sensors: LargeST files or the PatchSTG release",
         dict(target_name="flow", freq_minutes=15, mask_zeros=True), 64, 100),
        ("sd", "traffic", "LargeST SD (San Diego), 716 sensors: LargeST files or the PatchSTG release",
         dict(target_name="flow", freq_minutes=15, mask_zeros=True), 64, 100),
        ("era5", "weather", "ERA5 grid: GRIB/NetCDF (target u10) or the STemDist release (81x81, 6 features)",
         dict(target_name="wind_speed", freq_minutes=60, mask_zeros=False), 128, 100),
        ("cams", "weather", "CAMS reanalysis grid: GRIB/NetCDF (target co) or the STemDist release",
         dict(target_name="target", freq_minutes=180, mask_zeros=False), 64, 100),
    ]
    for name, family, description, options, batch, epochs in release:
        options = dict(options, description=description)
        if family == "traffic":
            prepare, hint = partial(prepare_largest, area=name, release=options), LARGEST_HINT
        else:
            prepare, hint = partial(prepare_weather, kind=name, release=options), WEATHER_HINT
        register_dataset(DatasetSpec(name, description, prepare=prepare, source_hint=hint,
                                     defaults=_defaults(batch, epochs)), family=family)
    register_dataset(DatasetSpec("urbanev", "UrbanEV Shenzhen: hourly EV charging volume in 275 zones",
                                 prepare=prepare_urbanev, source_hint=URBANEV_HINT, defaults=_defaults()),
                     family="ev")
    starts = {"pems03": "2018-09-01", "pems04": "2018-01-01", "pems07": "2017-05-01", "pems08": "2016-07-01"}
    for name, start in starts.items():
        register_dataset(DatasetSpec(
            name, f"{name.upper()} traffic flow, 5 min (ASTGCN/STSGCN npz)",
            prepare=partial(prepare_pems, start=f"{start}T00:00:00"),
            source_hint=f"{name.upper()}.npz (with {name.upper()}.csv next to it for the graph)",
            defaults=_defaults()), family="traffic")


_register_builtins()
_register_shared()
_register_papers()
