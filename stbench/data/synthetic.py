"""Built-in synthetic datasets: a gridded weather field and a road-network traffic graph.

Both generators are vectorised and work in time chunks written into one preallocated float32 array,
so memory stays proportional to the output even at 10^4 locations x 10^4+ steps. All randomness comes
from ``np.random.default_rng(seed)``: the same seed gives identical arrays.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.signal import lfilter
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from stbench import UserError
from stbench.data.core import STData, array_sha256

DENSE_ADJ_LIMIT = 20_000      # above this many locations no dense (N, N) adjacency is stored
MAX_FEATURES = 8
START = np.datetime64("2020-01-01T00:00:00", "s")
_CHUNK_ELEMS = 1 << 22        # time-chunk size: about 4M values per (chunk, N) temporary

WEATHER_CHANNELS = ["temperature", "pressure", "humidity", "wind_speed", "dewpoint",
                    "cloud_cover", "solar_radiation", "precipitation"]
TRAFFIC_CHANNELS = ["speed", "flow", "occupancy", "tod_sin", "tod_cos", "dow_sin", "dow_cos",
                    "is_weekend"]


# ----------------------------------------------------------------------------------------- helpers
def dense_adjacency(rows: np.ndarray, cols: np.ndarray, n: int) -> np.ndarray | None:
    """Symmetric 0/1 float32 (n, n) matrix from an edge list; None when n > DENSE_ADJ_LIMIT."""
    if n > DENSE_ADJ_LIMIT:
        return None
    adj = np.zeros((n, n), dtype=np.float32)
    adj[rows, cols] = 1.0
    adj[cols, rows] = 1.0
    return adj


def grid_adjacency(n_rows: int, n_cols: int) -> np.ndarray | None:
    """4-neighbour 0/1 adjacency of a grid flattened row-major (row = latitude, column = longitude)."""
    idx = np.arange(n_rows * n_cols).reshape(n_rows, n_cols)
    rows = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    cols = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    return dense_adjacency(rows, cols, n_rows * n_cols)


def _timestamps(steps: int, freq_minutes: int) -> np.ndarray:
    return START + np.arange(steps, dtype=np.int64) * np.timedelta64(int(freq_minutes) * 60, "s")


def _chunks(steps: int, n: int):
    size = max(1, _CHUNK_ELEMS // max(n, 1))
    for start in range(0, steps, size):
        yield start, min(steps, start + size)


def _check_knobs(**knobs) -> None:
    """Reject size knobs outside their valid range with a one-line hint."""
    limits = {"seed": (0, None), "steps": (2, None), "locations": (1, None), "n_lat": (1, None),
              "n_lon": (1, None), "features": (1, MAX_FEATURES), "freq_minutes": (1, 1440)}
    for name, value in knobs.items():
        low, high = limits[name]
        is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        if not is_int or value < low or (high is not None and value > high):
            bound = f"{low}..{high}" if high is not None else f">= {low}"
            raise UserError(f"synthetic dataset option {name}={value!r} is invalid: use an integer {bound}")


def memory_limit() -> int | None:
    """Bytes of memory this process can use at most: physical memory, or a smaller cgroup limit."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = int(text) if total is None else min(total, int(text))
        break
    return total


def _check_memory(name: str, nbytes: float, knobs: dict) -> None:
    """Refuse, before allocating anything, a size whose arrays alone exceed this machine's memory."""
    limit = memory_limit()
    if limit is not None and nbytes > limit:
        given = ", ".join(f"{k}={v}" for k, v in knobs.items())
        raise UserError(f"{name} with {given} needs about {_human(nbytes)} of memory, more than the "
                        f"{_human(limit)} here: reduce the size knobs ({', '.join(knobs)})")


def _human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if nbytes < 1024 or unit == "PB":
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1024
    return f"{nbytes:.3g} PB"


def _adjacency_bytes(n: int) -> int:
    return 4 * n * n if n <= DENSE_ADJ_LIMIT else 0


def _finish(values, mask, meta, **extras) -> STData:
    meta["data_sha256"] = array_sha256(values)
    return STData(values=values, mask=mask, meta=meta, **extras)


# ----------------------------------------------------------------------------------------- weather
class _WeatherField:
    """Random smooth components of a temperature-like field over a lat/lon grid."""

    def __init__(self, rng: np.random.Generator, lat: np.ndarray, lon: np.ndarray):
        self.lat, self.lon = lat, lon
        lat_n, lon_n = np.meshgrid(lat, lon, indexing="ij")
        self.lat_n, self.lon_n = lat_n.ravel(), lon_n.ravel()
        self.base = self._base(rng)
        self.diurnal_amp = (3.0 + 2.0 * rng.random(self.base.size)).astype(np.float32)
        self.global_terms = [(1.5 * rng.random(), 24.0 * rng.uniform(2, 9), rng.uniform(0, 2 * np.pi))
                             for _ in range(3)]
        angle = rng.uniform(-0.4, 0.4)                      # mostly westerly wind, degrees per hour
        speed = rng.uniform(0.3, 0.6)
        self.wind = np.array([speed * np.cos(angle), speed * np.sin(angle)])  # (d lon, d lat) / h
        self.waves = []
        for direction in rng.uniform(0, np.pi, 2):                # (amplitude, wavevector, phase)
            wavevector = 2 * np.pi / rng.uniform(8, 20) * np.array([np.cos(direction), np.sin(direction)])
            self.waves.append((rng.uniform(1.0, 2.5), wavevector, rng.uniform(0, 2 * np.pi)))
        span_lon, span_lat = np.ptp(lon) + 12.0, np.ptp(lat) + 12.0
        self.blobs = [(rng.choice([-1, 1]) * rng.uniform(2, 4), rng.uniform(2, 4),
                       rng.uniform(0, span_lon), rng.uniform(0, span_lat)) for _ in range(3)]
        self.span = (span_lon, span_lat)

    def _base(self, rng) -> np.ndarray:
        """Latitude gradient plus a few smooth random bumps, in kelvin."""
        base = 288.0 - 0.55 * (self.lat_n - 40.0)
        for _ in range(5):
            c_lat = rng.uniform(self.lat.min(), self.lat.max())
            c_lon = rng.uniform(self.lon.min(), self.lon.max())
            width = rng.uniform(3, 8)
            d2 = (self.lat_n - c_lat) ** 2 + (self.lon_n - c_lon) ** 2
            base += rng.normal(0, 2.5) * np.exp(-d2 / (2 * width ** 2))
        return base.astype(np.float32)

    def global_trend(self, hours: np.ndarray) -> np.ndarray:
        trend = np.zeros(hours.size)
        for amp, period, phase in self.global_terms:
            trend += amp * np.sin(2 * np.pi * hours / period + phase)
        return trend.astype(np.float32)

    def cycle(self, hours: np.ndarray, peak_local_hour: float, period: float = 24.0) -> np.ndarray:
        """cos of local solar time (longitude-dependent phase) as a rank-2 product, (t, N)."""
        a = (2 * np.pi * hours / period)
        b = (2 * np.pi * (self.lon_n / 15.0 - peak_local_hour) / period)
        out = np.outer(np.cos(a).astype(np.float32), np.cos(b).astype(np.float32))
        out -= np.outer(np.sin(a).astype(np.float32), np.sin(b).astype(np.float32))
        return out

    def advected(self, hours: np.ndarray) -> np.ndarray:
        """Plane waves and Gaussian blobs drifting with the constant wind, (t, N) in kelvin."""
        out = np.zeros((hours.size, self.base.size), dtype=np.float32)
        pos = np.stack([self.lon_n, self.lat_n], axis=1)
        for amp, k, phase in self.waves:
            space = pos @ k + phase
            time = float(k @ self.wind) * hours
            out += np.outer((amp * np.cos(time)).astype(np.float32), np.sin(space).astype(np.float32))
            out -= np.outer((amp * np.sin(time)).astype(np.float32), np.cos(space).astype(np.float32))
        for amp, sigma, c_lon, c_lat in self.blobs:
            gx = self._drift(self.lon, self.lon.min() - 6.0, c_lon, self.wind[0], hours, 0, sigma)
            gy = self._drift(self.lat, self.lat.min() - 6.0, c_lat, self.wind[1], hours, 1, sigma)
            out += (amp * gy[:, :, None] * gx[:, None, :]).reshape(hours.size, -1)
        return out

    def _drift(self, axis, origin, center, speed, hours, dim, sigma) -> np.ndarray:
        """Gaussian profile along one grid axis of a blob moving on a periodic domain, (t, len(axis))."""
        span = self.span[dim]
        c = (center + speed * hours) % span + origin
        d = (axis[None, :] - c[:, None] + span / 2) % span - span / 2
        return np.exp(-(d ** 2) / (2 * sigma ** 2)).astype(np.float32)


def _weather_plan(seed, n_lat, n_lon, steps, features, freq_minutes, in_memory: bool = True):
    """Everything but the values: meta, graph, coordinates, timestamps and a chunk filler."""
    _check_knobs(seed=seed, n_lat=n_lat, n_lon=n_lon, steps=steps, features=features,
                 freq_minutes=freq_minutes)
    n = n_lat * n_lon
    array_bytes = 4.0 * steps * n * features if in_memory else 4.0 * _CHUNK_ELEMS * features * 8
    _check_memory("synthetic-weather", array_bytes + 160.0 * n + _adjacency_bytes(n),
                  dict(n_lat=n_lat, n_lon=n_lon, steps=steps, features=features))
    rng = np.random.default_rng(seed)
    lat = np.linspace(58.0, 40.0, n_lat) if n_lat > 1 else np.array([49.0])
    lon = np.linspace(-10.0, 20.0, n_lon) if n_lon > 1 else np.array([5.0])
    field = _WeatherField(rng, lat, lon)
    lag = max(1, round(180 / freq_minutes))                    # 3 h expressed in steps

    def fill(out: np.ndarray, start: int, stop: int) -> None:
        hours = np.arange(start - lag, stop) * (freq_minutes / 60.0)
        _weather_chunk(out, field, hours, lag, rng)

    meta = {"name": "synthetic-weather", "channels": WEATHER_CHANNELS[:features], "targets": [0],
            "freq_minutes": freq_minutes, "mask_zeros": False,
            "description": "synthetic gridded weather: diurnal cycle, advected anomalies, lagged covariates",
            "graph": {"kind": "grid-4-neighbour", "weights": "0/1"},
            "source": {"generator": "synthetic_weather",
                       "params": {"seed": seed, "n_lat": n_lat, "n_lon": n_lon, "steps": steps,
                                  "features": features, "freq_minutes": freq_minutes}}}
    coords = np.stack([field.lat_n, field.lon_n], axis=1).astype(np.float64)
    extras = dict(adj=grid_adjacency(n_lat, n_lon), coords=coords, timestamps=_timestamps(steps, freq_minutes))
    return (steps, n, features), meta, extras, fill


def synthetic_weather(seed: int = 0, n_lat: int = 12, n_lon: int = 12, steps: int = 720,
                      features: int = 3, freq_minutes: int = 60) -> STData:
    """Gridded weather: temperature (target, K) plus lagged, correlated variables."""
    shape, meta, extras, fill = _weather_plan(seed, n_lat, n_lon, steps, features, freq_minutes)
    values = np.empty(shape, dtype=np.float32)
    for start, stop in _chunks(steps, shape[1]):
        fill(values[start:stop], start, stop)
    return _finish(values, None, meta, **extras)


def _weather_chunk(out: np.ndarray, field: _WeatherField, hours: np.ndarray, lag: int, rng) -> None:
    """Fill out[t, n, c] for one time chunk; ``hours`` starts ``lag`` steps before the chunk."""
    t, n = out.shape[0], out.shape[1]
    feats = out.shape[2]
    adv = field.advected(hours)                                # (lag + t, N)
    diurnal = field.cycle(hours, 15.0) * field.diurnal_amp     # warmest mid-afternoon local time
    now = slice(lag, lag + t)
    temp = field.base + field.global_trend(hours[now])[:, None] + diurnal[now] + adv[now]
    temp += 0.3 * rng.standard_normal((t, n), dtype=np.float32)
    out[:, :, 0] = temp
    if feats > 1:   # pressure: low after a warm anomaly has passed, plus the semidiurnal tide
        tide = field.cycle(hours[now], 10.0, period=12.0)
        out[:, :, 1] = (1013.0 + 0.4 * (field.lat_n - 47.0)).astype(np.float32) - 1.8 * adv[:t] \
            + 0.6 * tide + 0.3 * rng.standard_normal((t, n), dtype=np.float32)
    humidity = None
    if feats > 2:   # relative humidity falls as the air warms, with a 1-2 h lag
        half = max(1, lag // 2)
        humidity = 72.0 - 2.0 * diurnal[lag - half:lag - half + t] - 1.5 * adv[lag - half:lag - half + t]
        humidity += 2.0 * rng.standard_normal((t, n), dtype=np.float32)
        out[:, :, 2] = np.clip(humidity, 5.0, 100.0)
    if feats > 3:   # wind strengthens with the advected anomaly one step earlier
        out[:, :, 3] = np.abs(4.0 + 0.8 * adv[lag - 1:lag - 1 + t]
                              + 0.5 * rng.standard_normal((t, n), dtype=np.float32))
    if feats > 4:   # dewpoint from temperature and humidity (Lawrence approximation)
        out[:, :, 4] = out[:, :, 0] - (100.0 - out[:, :, 2]) / 5.0
    if feats > 5:   # cloud cover (%) follows cold anomalies with a lag
        cloud = 50.0 - 8.0 * adv[:t] + 10.0 * rng.standard_normal((t, n), dtype=np.float32)
        out[:, :, 5] = np.clip(cloud, 0.0, 100.0)
    if feats > 6:   # clear-sky solar radiation dimmed by clouds
        sun = np.maximum(field.cycle(hours[now], 12.0), 0.0) * 800.0
        out[:, :, 6] = sun * (1.0 - 0.6 * out[:, :, 5] / 100.0)
    if feats > 7:   # rain where the air is near saturation
        rain = (out[:, :, 2] - 85.0) / 5.0 + 0.3 * rng.standard_normal((t, n), dtype=np.float32)
        out[:, :, 7] = np.maximum(rain, 0.0)


# ----------------------------------------------------------------------------------------- traffic
def _road_graph(rng, n: int, k: int = 4):
    """Random sensor positions in an LA-sized box, symmetric k-NN graph made connected (CSR)."""
    lat = rng.uniform(33.9, 34.2, n)
    lon = rng.uniform(-118.5, -118.1, n)
    xy = np.stack([lon * 111.32 * np.cos(np.deg2rad(34.05)), lat * 110.57], axis=1)  # km
    rows, cols = np.empty(0, np.int64), np.empty(0, np.int64)
    if n > 1:
        kk = min(k, n - 1)
        _, nbr = cKDTree(xy).query(xy, k=kk + 1)
        rows, cols = np.repeat(np.arange(n), kk), nbr[:, 1:].ravel()
        rows, cols = _connect(xy, rows, cols, n)
    graph = sparse.coo_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n, n))
    graph = ((graph + graph.T) > 0).astype(np.float32).tocsr()
    coords = np.stack([lat, lon], axis=1)
    return graph, coords, rows, cols


def _connect(xy, rows, cols, n):
    """Link every smaller connected component to its nearest node in the largest component."""
    graph = sparse.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    count, labels = connected_components(graph, directed=False)
    if count == 1:
        return rows, cols
    main = np.bincount(labels).argmax()
    main_nodes = np.flatnonzero(labels == main)
    dist, nearest = cKDTree(xy[main_nodes]).query(xy)
    extra_r, extra_c = [], []
    for comp in range(count):
        if comp == main:
            continue
        members = np.flatnonzero(labels == comp)
        best = members[np.argmin(dist[members])]
        extra_r.append(best)
        extra_c.append(main_nodes[nearest[best]])
    return np.concatenate([rows, extra_r]), np.concatenate([cols, extra_c])


def _calendar(steps: int, freq_minutes: int):
    """Hour of day (float) and weekend flag per step; day of week with Monday = 0."""
    minutes = np.arange(steps, dtype=np.int64) * freq_minutes
    hour = (minutes % 1440) / 60.0
    dow = (minutes // 1440 + 2) % 7                            # 2020-01-01 was a Wednesday
    return hour, dow, dow >= 5


def _bump(hour, centre, width):
    return np.exp(-((hour - centre) ** 2) / (2 * width ** 2))


def _events(rng, graph, steps: int, freq_minutes: int, hour, weekend) -> np.ndarray:
    """Congestion impulses (t, n) that start at random nodes and spread hop by hop with delay and decay."""
    n = graph.shape[0]
    peak = np.where(weekend, 0.3, 0.3 + _bump(hour, 8.0, 1.0) + _bump(hour, 17.5, 1.3))
    days = steps * freq_minutes / 1440.0
    count = rng.poisson(0.15 * n * days)
    t = rng.choice(steps, size=count, p=peak / peak.sum())
    node = rng.integers(0, n, count)
    strength = rng.uniform(0.25, 0.6, count).astype(np.float32)
    impulses = np.zeros((steps, n), dtype=np.float32)
    delay = max(1, round(10 / freq_minutes))
    for hop in range(4):                                        # origin plus three hops
        keep = t < steps
        t, node, strength = _dedupe(t[keep], node[keep], strength[keep], n)
        np.maximum.at(impulses, (t, node), strength)
        if hop == 3:
            break
        degree = np.diff(graph.indptr)[node]
        starts = np.repeat(graph.indptr[node], degree)
        offsets = np.arange(degree.sum()) - np.repeat(np.cumsum(degree) - degree, degree)
        node = graph.indices[starts + offsets]
        t = np.repeat(t, degree) + delay
        strength = np.repeat(strength, degree) * 0.6
    return impulses


def _dedupe(t, node, strength, n):
    """Keep the strongest impulse per (step, node)."""
    key = t.astype(np.int64) * n + node
    order = np.lexsort((-strength, key))
    first = np.ones(order.size, dtype=bool)
    first[1:] = key[order][1:] != key[order][:-1]
    sel = order[first]
    return t[sel], node[sel], strength[sel]


def _smooth_events(impulses: np.ndarray, freq_minutes: int, block: int = 512) -> np.ndarray:
    """Rise-and-recover response to each impulse (difference of two exponential filters), in place."""
    decay = np.exp(-freq_minutes / 40.0)
    rise = np.exp(-freq_minutes / 40.0 - freq_minutes / 10.0)
    tau = np.arange(0, 400)
    kernel = decay ** tau - rise ** tau
    scale = 1.0 / kernel.max()
    block = max(1, min(block, (1 << 21) // max(1, impulses.shape[0])))   # float64 temporaries stay small
    for start in range(0, impulses.shape[1], block):
        cols = impulses[:, start:start + block]
        slow = lfilter([1.0], [1.0, -decay], cols, axis=0)
        slow -= lfilter([1.0], [1.0, -rise], cols, axis=0)
        impulses[:, start:start + block] = slow * scale
    return impulses


def _burst_mask(rng, steps: int, n: int, missing: float, mean_len: int) -> np.ndarray:
    """(t, n) observed flags with about ``missing`` of the readings lost in bursts of a few steps."""
    observed = np.ones((steps, n), dtype=bool)
    target = missing * steps * n
    for _ in range(8):
        deficit = target - (steps * n - np.count_nonzero(observed))
        if deficit < max(1.0, 0.002 * target):
            break
        bursts = int(np.ceil(deficit / mean_len))
        length = np.minimum(rng.geometric(1.0 / mean_len, bursts), max(1, int(deficit)))
        t0 = rng.integers(0, steps, bursts)
        node = rng.integers(0, n, bursts)
        offsets = np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length)
        t = np.repeat(t0, length) + offsets
        keep = t < steps
        observed[t[keep], np.repeat(node, length)[keep]] = False
    return observed


def _traffic_plan(seed, locations, steps, features, missing, freq_minutes, in_memory: bool = True):
    """Graph, events and a chunk filler for the traffic generator; the burst mask comes after the values."""
    _check_knobs(seed=seed, locations=locations, steps=steps, features=features, freq_minutes=freq_minutes)
    numeric = isinstance(missing, (int, float, np.number)) and not isinstance(missing, bool)
    if not numeric or not 0.0 <= missing < 0.9:
        raise UserError(f"synthetic-traffic option missing={missing!r} is invalid: "
                        "use a fraction in [0, 0.9)")
    cells = float(steps) * locations
    per_cell = 6.0 * features + 5.0 if in_memory else 5.0 + (1.0 if missing > 0 else 0.0)
    _check_memory("synthetic-traffic", cells * per_cell + 200.0 * locations
                  + _adjacency_bytes(locations), dict(locations=locations, steps=steps, features=features))
    rng = np.random.default_rng(seed)
    n = locations
    graph, coords, rows, cols = _road_graph(rng, n)
    hour, dow, weekend = _calendar(steps, freq_minutes)
    free = rng.uniform(55.0, 70.0, n).astype(np.float32)
    sens = (0.55 * rng.beta(2.0, 3.0, n)).astype(np.float32)
    inbound = rng.random(n).astype(np.float32)                  # share of the morning vs evening peak
    morning = np.where(weekend, 0.0, _bump(hour, 8.0, 1.0)).astype(np.float32)
    evening = np.where(weekend, 0.0, _bump(hour, 17.5, 1.3)).astype(np.float32)
    midday = np.where(weekend, 0.35 * _bump(hour, 14.0, 2.5), 0.0).astype(np.float32)
    events = _smooth_events(_events(rng, graph, steps, freq_minutes, hour, weekend), freq_minutes)

    def fill(out: np.ndarray, start: int, stop: int) -> None:
        s = slice(start, stop)
        load = (np.outer(morning[s], 0.6 + 0.8 * inbound) + np.outer(evening[s], 1.4 - 0.8 * inbound)
                + midday[s, None]) * sens
        speed = free * (1.0 - np.minimum(load, 0.8)) * (1.0 - np.minimum(events[s], 0.85))
        speed += 1.2 * rng.standard_normal(speed.shape, dtype=np.float32)
        out[:, :, 0] = np.clip(speed, 3.0, 85.0)
        if features > 1:
            _traffic_extras(out, free, hour[s], weekend[s], dow[s], rng)

    def observed():
        """(steps, n) observed flags, or None; call after every chunk is filled (same random stream)."""
        if missing <= 0:
            return None
        return _burst_mask(rng, steps, n, missing, max(1, round(30 / freq_minutes)))

    meta = {"name": "synthetic-traffic", "channels": TRAFFIC_CHANNELS[:features], "targets": [0],
            "freq_minutes": freq_minutes, "mask_zeros": True,
            "description": "synthetic road-graph speeds: rush hours, weekly cycle, spreading congestion",
            "graph": {"kind": "symmetric-4-nearest-neighbours, connected", "weights": "0/1"},
            "source": {"generator": "synthetic_traffic",
                       "params": {"seed": seed, "locations": locations, "steps": steps,
                                  "features": features, "missing": missing,
                                  "freq_minutes": freq_minutes}}}
    extras = dict(adj=dense_adjacency(rows, cols, n), coords=coords, timestamps=_timestamps(steps, freq_minutes))
    return (steps, n, features), meta, extras, fill, observed


def synthetic_traffic(seed: int = 0, locations: int = 64, steps: int = 2016, features: int = 1,
                      missing: float = 0.02, freq_minutes: int = 5) -> STData:
    """Road-graph traffic: speed (target, mph) with rush hours, spreading congestion, missing bursts."""
    shape, meta, extras, fill, observed_flags = _traffic_plan(seed, locations, steps, features, missing,
                                                              freq_minutes)
    values = np.empty(shape, dtype=np.float32)
    for start, stop in _chunks(steps, locations):
        fill(values[start:stop], start, stop)
    mask = None
    observed = observed_flags()
    if observed is not None:
        mask = np.ones(values.shape, dtype=bool)
        mask[:, :, :_MEASURED(features)] = observed[:, :, None]
        values[~mask] = 0.0
    return _finish(values, mask, meta, **extras)


def _MEASURED(features: int) -> int:   # noqa: N802 - speed, flow, occupancy; calendar features are always known
    return min(features, 3)


# ------------------------------------------------------------------------------- written to disk
def write_synthetic(builtin: str, name: str, data_root=None, **knobs):
    """``stbench prepare NAME --synthetic synthetic-weather --size ...``: the generator's data written
    into ``data_root/NAME`` chunk by chunk (memory-mapped), for sets larger than memory.

    The values equal ``load_dataset(builtin, **knobs)`` exactly (same chunks, same random stream)."""
    from stbench.data.catalog import (NAME_PATTERN, _register_discovered, check_size_knobs, data_dir,
                                      DatasetSpec)
    from stbench.data.stream import DatasetWriter, report_share
    from stbench.registry import DATASETS, UnknownName

    spec: DatasetSpec = DATASETS.get(builtin)
    if not spec.builtin or spec.generate not in (synthetic_weather, synthetic_traffic):
        raise UserError(f"--synthetic {builtin}: choose synthetic-weather or synthetic-traffic")
    if not NAME_PATTERN.match(name):
        raise UserError(f"dataset name {name!r} must be lower-case letters, digits, '.', '-' or '_'")
    try:
        other = DATASETS.get(name)
    except UnknownName:
        other = None
    if other is not None and not other.discovered:
        raise UserError(f"{name} is a registered dataset: choose another NAME for the written data")
    check_size_knobs(spec, knobs)
    import inspect
    params = {k: p.default for k, p in inspect.signature(spec.generate).parameters.items()}
    params.update(knobs)
    if spec.generate is synthetic_weather:
        shape, meta, extras, fill = _weather_plan(**params, in_memory=False)
        observed_flags = None
    else:
        shape, meta, extras, fill, observed_flags = _traffic_plan(**params, in_memory=False)
    size = ",".join(f"{k}={v}" for k, v in knobs.items())
    meta = dict(meta, prepare_command=f"stbench prepare {name} --synthetic {builtin}"
                + (f" --size {size}" if size else ""))
    folder = data_dir(data_root) / name
    steps, n, features = shape
    with DatasetWriter(folder, shape) as writer:
        for start, stop in _chunks(steps, n):
            block = np.empty((stop - start, n, features), dtype=np.float32)
            fill(block, start, stop)
            writer.write(start, block)
        observed = observed_flags() if observed_flags is not None else None
        if observed is not None:
            for start, stop in _chunks(steps, n):
                block = writer.read_back(start, stop)
                seen = np.ones(block.shape, dtype=bool)
                seen[:, :, :_MEASURED(features)] = observed[start:stop, :, None]
                writer.write(start, block, observed=seen)
        folder, stats = writer.finish(meta, mask_zeros=meta.pop("mask_zeros"), **extras)
    report_share(name, stats["masked_share"], stats["meta"]["mask_zeros"])
    _register_discovered(name, stats["meta"])
    return folder


def _traffic_extras(out: np.ndarray, free, hour, weekend, dow, rng) -> None:
    """Flow (veh/h) and occupancy derived from speed, then calendar encodings, for one time chunk."""
    t, n, feats = out.shape
    demand = np.where(weekend, 0.2 + 0.5 * _bump(hour, 13.0, 3.5),
                      0.15 + 0.6 * _bump(hour, 8.0, 2.0) + 0.7 * _bump(hour, 17.0, 2.5))
    ratio = out[:, :, 0] / free
    occ = 0.02 + 0.06 * demand[:, None].astype(np.float32) + 0.4 * np.maximum(1.0 - ratio, 0.0)
    occ += 0.005 * rng.standard_normal((t, n), dtype=np.float32)
    occ = np.clip(occ, 0.005, 0.95)
    out[:, :, 1] = occ * 264.0 * out[:, :, 0] * (1.0 + 0.03 * rng.standard_normal((t, n), dtype=np.float32))
    if feats > 2:
        out[:, :, 2] = occ
    day = 2 * np.pi * hour / 24.0
    week = 2 * np.pi * (dow + hour / 24.0) / 7.0
    calendar = [np.sin(day), np.cos(day), np.sin(week), np.cos(week), weekend.astype(float)]
    for c in range(3, feats):
        out[:, :, c] = calendar[c - 3].astype(np.float32)[:, None]
