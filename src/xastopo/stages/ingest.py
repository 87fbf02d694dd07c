"""DVC stage `ingest`: raw labels + site spectra → validated tables and the data-quality report."""

from __future__ import annotations

from pathlib import Path

from xastopo.config import get, load_params, raw_path
from xastopo.data.ingest import ingest, simulated_sites
from xastopo.stages.common import run_stage, write_json


def main() -> None:
    params = load_params()
    spectra = raw_path(params, "site_spectra")
    labels_csv = raw_path(params, "labels_csv")
    simulated = simulated_sites(Path(get(params, "data.simulated_dir")))
    sites, labels, report = ingest(
        spectra, labels_csv, int(get(params, "ingest.min_points")),
        float(get(params, "ingest.flat_run_tol")), simulated,
    )
    out = Path("data/interim")
    out.mkdir(parents=True, exist_ok=True)
    keep = [c for c in sites.columns if c not in ("feff_inp",)]
    sites[keep].to_parquet(out / "sites.parquet", index=False)
    labels.to_parquet(out / "labels.parquet", index=False)
    raw = get(params, "data.raw_dir")
    report["inputs"] = {"site_spectra": f"{raw}/{get(params, 'data.site_spectra')}",
                        "labels_csv": f"{raw}/{get(params, 'data.labels_csv')}"}
    write_json("reports/data_quality.json", report)
    s = report["spectra"]
    print(f"ingest: {s['rows_read']} spectra read, {s['rows_valid']} valid, {s['rows_rejected']} rejected "
          f"{s['rejected_by_reason']}; {len(labels)} label rows")


if __name__ == "__main__":
    run_stage(main)
