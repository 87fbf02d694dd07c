"""Champion → one ONNX file (dynamic batch and absorbers), metadata, and framework parity.

The NN is exported with torch.onnx (dynamo) as the probability graph; an SVM champion with
skl2onnx on its feature vector (the Predictor builds that vector from the same padded inputs).
The registry (``xastopo.families``) names each family's exporter: ``exporter(model_dir, onnx_path,
preprocessor) -> Exported``; the spectra's width is the fitted preprocessor's ``n_points``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import joblib
import numpy as np
import onnx

from xastopo.artifacts import sha256_file

if TYPE_CHECKING:
    from xastopo.preprocessing.preprocessor import Preprocessor


@dataclass
class Exported:
    """An exported family: the framework's probabilities on the graph's inputs (for the parity
    check) and, for the concatenated-spectra SVM, the training element order (metadata)."""

    framework: Callable[[dict], np.ndarray]
    element_z: list[int] | None = None
    #: the framework's uncertainty on the graph's inputs, for families whose graph outputs one
    uncertainty: Callable[[dict], np.ndarray] | None = None


def export_nn(model_pt: Path, out: Path, n_points: int) -> tuple[object, Callable[[dict], np.ndarray]]:
    """Export the saved network for spectra of ``n_points`` (the preprocessor's); return (torch
    module, framework predict function)."""
    import torch

    from xastopo.models.nn import ProbabilityModel, build_net

    ckpt = torch.load(model_pt, map_location="cpu", weights_only=False)
    if ckpt.get("n_points", n_points) != n_points:
        raise ValueError(f"{model_pt}: trained on spectra of {ckpt['n_points']} points, but the preprocessor has "
                         f"n_points={n_points} (retrain: `dvc repro`)")
    net = build_net({"nn": ckpt["config"]}, n_points, ckpt["use_spectra"])
    net.load_state_dict(ckpt["state_dict"])
    model = ProbabilityModel(net).eval()
    x = torch.zeros(2, 2, n_points)
    z = torch.tensor([[29, 0], [22, 8]])
    m = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    batch, absorbers = torch.export.Dim("batch", min=1), torch.export.Dim("absorbers", min=1)
    dyn = {0: batch, 1: absorbers}
    torch.onnx.export(model, (x, z, m), str(out), input_names=["spectra", "z", "mask"],
                      output_names=["probability"], dynamo=True, verbose=False, external_data=False,
                      dynamic_shapes={"spectra": dyn, "z": dyn, "mask": dyn})

    @torch.no_grad()
    def framework(a: dict) -> np.ndarray:
        return model(torch.as_tensor(a["spectra"]), torch.as_tensor(a["z"]),
                     torch.as_tensor(a["mask"])).numpy().astype(np.float64)

    return model, framework


def export_svm(model_joblib: Path, out: Path) -> tuple[object, Callable[[dict], np.ndarray], list[int] | None]:
    """Export the saved SVC on its feature vector; return (classifier, framework function, element order)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    saved = joblib.load(model_joblib)
    clf = saved["model"]
    n = int(clf.n_features_in_)
    onx = convert_sklearn(clf, initial_types=[("features", FloatTensorType([None, n]))],
                          options={id(clf): {"zipmap": False}}, target_opset=17)
    out.write_bytes(onx.SerializeToString())

    def framework(a: dict) -> np.ndarray:
        return clf.predict_proba(a["features"])[:, 1]

    return clf, framework, saved.get("element_z")


def export_network(model_dir: Path, out: Path, pre: Preprocessor) -> Exported:
    """Exporter of the network families (``models/<name>/model.pt``)."""
    _, framework = export_nn(Path(model_dir) / "model.pt", out, pre.n_points)
    return Exported(framework)


def export_any_edge(model_pt: Path, out: Path, n_points: int):
    """Export the saved ``nn_any`` ensemble with its calibration as one graph: inputs spectra, z, mask,
    has_spectrum; outputs probability (calibrated members' mean) and uncertainty (their std).
    Returns (torch module, framework function → (probability, uncertainty))."""
    import torch

    from xastopo.models.nn import CalibratedEnsemble, build_any_edge_net

    ckpt = torch.load(model_pt, map_location="cpu", weights_only=False)
    if ckpt["n_points"] != n_points:
        raise ValueError(f"{model_pt}: trained on spectra of {ckpt['n_points']} points, but the preprocessor has "
                         f"n_points={n_points} (retrain: `dvc repro`)")
    nets = []
    for state in ckpt["members"]:
        net = build_any_edge_net(ckpt["config"], n_points)
        net.load_state_dict(state)
        nets.append(net)
    model = CalibratedEnsemble(nets, float(ckpt["temperature"]), float(ckpt.get("bias", 0.0))).eval()
    x = torch.zeros(2, 2, n_points)
    z = torch.tensor([[29, 0], [22, 8]])
    m = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    batch, absorbers = torch.export.Dim("batch", min=1), torch.export.Dim("absorbers", min=1)
    dyn = {0: batch, 1: absorbers}
    torch.onnx.export(model, (x, z, m, h), str(out), input_names=["spectra", "z", "mask", "has_spectrum"],
                      output_names=["probability", "uncertainty"], dynamo=True, verbose=False,
                      external_data=False,
                      dynamic_shapes={"spectra": dyn, "z": dyn, "mask": dyn, "has_spectrum": dyn})

    graph = onnx.load(str(out))
    if einsum_as_matmul(graph):
        onnx.save(graph, str(out))

    @torch.no_grad()
    def framework(a: dict) -> tuple[np.ndarray, np.ndarray]:
        p, u = model(*(torch.as_tensor(a[k]) for k in ("spectra", "z", "mask", "has_spectrum")))
        return p.numpy().astype(np.float64), u.numpy().astype(np.float64)

    return model, framework


def einsum_as_matmul(model: onnx.ModelProto) -> int:
    """Rewrite the outer product ``Einsum("bas,bat,ba->bst", s, t, mask)`` of every ensemble member as
    ``MatMul(Transpose(s * mask[..., None]), t)`` (the same sum over absorbers); returns how many.

    Why: ONNX Runtime's CPU Einsum kernel took ~60 % of the whole graph's time at 4,096 materials
    (measured with its profiler; the GEMMs of the MLPs are the rest); as a batched MatMul the graph runs
    1.2-1.8x faster end to end (``benchmarks/model_ort_vs_torch.py``). The result differs from the einsum
    by float rounding only (max 2e-7 on the test split), and the export's parity check still compares
    the rewritten graph with the torch model."""
    from onnx import helper, numpy_helper

    nodes, count, axes = [], 0, "einsum_as_matmul_axes"
    for n in model.graph.node:
        equation = next((a.s for a in n.attribute if a.name == "equation"), b"").replace(b" ", b"")
        if n.op_type != "Einsum" or equation != b"bas,bat,ba->bst":
            nodes.append(n)
            continue
        s, t, m = n.input
        p = f"{n.name}_as_matmul"
        nodes += [helper.make_node("Unsqueeze", [m, axes], [f"{p}_mask"], name=f"{p}_unsqueeze"),
                  helper.make_node("Mul", [s, f"{p}_mask"], [f"{p}_masked"], name=f"{p}_mul"),
                  helper.make_node("Transpose", [f"{p}_masked"], [f"{p}_t"], perm=[0, 2, 1], name=f"{p}_transpose"),
                  helper.make_node("MatMul", [f"{p}_t", t], list(n.output), name=f"{p}_matmul")]
        count += 1
    if count:
        model.graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), axes))
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        onnx.checker.check_model(model)
    return count


def export_network_any(model_dir: Path, out: Path, pre: Preprocessor) -> Exported:
    """Exporter of ``nn_any`` (``models/nn_any/model.pt``: members, config, temperature, bias)."""
    _, both = export_any_edge(Path(model_dir) / "model.pt", out, pre.n_points)
    return Exported(lambda a: both(a)[0], None, lambda a: both(a)[1])


def export_svc(model_dir: Path, out: Path, pre: Preprocessor) -> Exported:
    """Exporter of the SVM families (``models/<name>/model.joblib``)."""
    _, framework, element_z = export_svm(Path(model_dir) / "model.joblib", out)
    return Exported(framework, element_z)


def set_metadata(path: Path, meta: dict) -> None:
    """Write string metadata_props into the ONNX file (model name/version, run id, hashes...)."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key = k
        p.value = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    model.producer_name = "xastopo"
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path))


def parity(predictor, framework, inputs: dict, arrays: dict, atol: float) -> dict:
    """ONNX Runtime (through the Predictor, from the padded ``arrays``) vs the framework (on the
    graph's ``inputs`` built from the same arrays) probabilities and labels on a whole split."""
    p_ort = predictor.predict_arrays(arrays["X"], arrays["Z"], arrays["mask"], arrays.get("has_spectrum"))
    p_fw = framework(inputs)
    thr = predictor.threshold
    same = bool(np.array_equal(p_ort >= thr, p_fw >= thr))
    diff = float(np.max(np.abs(p_ort - p_fw))) if len(p_fw) else 0.0
    return {"n": int(len(p_fw)), "max_abs_diff": diff, "atol": atol, "labels_identical": same,
            "passed": bool(diff <= atol and same)}


def build_metadata(champion: dict, pre_sha: str, onnx_sha: str, kind: str, preprocessing: dict,
                   element_z: list[int] | None) -> dict:
    return {
        "model_name": champion["registered_model_name"], "model_version": str(champion["registered_version"]),
        "model_kind": kind, "mlflow_run_id": champion["mlflow_run_id"], "dataset_hash": champion["dvc_data_hash"],
        "threshold": champion["threshold"], "test_metrics": champion["test"],
        "preprocessor_sha256": pre_sha, "onnx_sha256": onnx_sha, "preprocessing": preprocessing,
        "element_z": element_z,  # no timestamp: the export is byte-for-byte reproducible
    }


def finalize(out_dir: Path, onnx_path: Path, champion: dict, pre_path: Path, kind: str,
             element_z: list[int] | None) -> dict:
    """Write ONNX metadata, the preprocessor copy and metadata.json (with checksums)."""
    from xastopo.preprocessing.preprocessor import Preprocessor

    pre = Preprocessor.load(pre_path)
    pre_sha = pre.save(out_dir / "preprocessor.json")
    meta = build_metadata(champion, pre_sha, "", kind, pre.to_dict(), element_z)
    onnx_meta = {k: v for k, v in meta.items() if k != "onnx_sha256"}
    set_metadata(onnx_path, onnx_meta)
    meta["onnx_sha256"] = sha256_file(onnx_path)
    (out_dir / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta
