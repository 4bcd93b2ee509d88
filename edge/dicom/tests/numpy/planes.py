"""The planes the edge cut through the chest CT, computed again with numpy from the NIfTI volume
itself (not from the DICOM series the edge read): the same sample positions, trilinear
interpolation written out, HU from the NIfTI's own scale. Prints the largest difference per
plane as JSON.

Usage: planes.py VOLUME.nii.gz PLANES.json   (PLANES.json: the planes and the raw f32 files of
the edge's values, written by edge/dicom/tests/volume.rs)
"""
import gzip, json, struct, sys
import numpy as np

volume_path, planes_path = sys.argv[1], sys.argv[2]
raw = gzip.open(volume_path).read()
dims = struct.unpack("<8h", raw[40:56])
columns, rows, slices = dims[1], dims[2], dims[3]
pixdim = struct.unpack("<8f", raw[76:108])
offset = int(struct.unpack("<f", raw[108:112])[0])
slope, intercept = struct.unpack("<2f", raw[112:120])
voxels = np.frombuffer(raw, dtype="<i2", count=columns * rows * slices, offset=offset)
# NIfTI order: i fastest, then j, then k. As volume[k, j, i] in HU.
volume = voxels.reshape(slices, rows, columns).astype(np.float64) * slope + intercept
# The DICOM series lists rows from the patient's front: j runs backwards.
volume = volume[:, ::-1, :]
dx, dy, dz = float(pixdim[1]), float(pixdim[2]), float(pixdim[3])

def sample(x, y, z):
    """Trilinear interpolation at voxel coordinates (arrays); NaN outside."""
    inside = (x >= -1e-6) & (x <= columns - 1 + 1e-6) & (y >= -1e-6) & (y <= rows - 1 + 1e-6) \
        & (z >= -1e-6) & (z <= slices - 1 + 1e-6)
    x = np.clip(x, 0, columns - 1); y = np.clip(y, 0, rows - 1); z = np.clip(z, 0, slices - 1)
    x0 = np.floor(x).astype(int); y0 = np.floor(y).astype(int); z0 = np.floor(z).astype(int)
    x1 = np.minimum(x0 + 1, columns - 1); y1 = np.minimum(y0 + 1, rows - 1); z1 = np.minimum(z0 + 1, slices - 1)
    fx, fy, fz = x - x0, y - y0, z - z0
    def plane(zz):
        a = volume[zz, y0, x0] * (1 - fx) + volume[zz, y0, x1] * fx
        b = volume[zz, y1, x0] * (1 - fx) + volume[zz, y1, x1] * fx
        return a * (1 - fy) + b * fy
    value = plane(z0) * (1 - fz) + plane(z1) * fz
    return np.where(inside, value, np.nan)

# Patient axes of the voxel axes: columns along +x, rows along +y (after the flip), slices +z.
centre = np.array([(columns - 1) * dx / 2, (rows - 1) * dy / 2, (slices - 1) * dz / 2])
axes = {
    "axial": (np.array([1.0, 0, 0]), np.array([0, 1.0, 0])),
    "coronal": (np.array([1.0, 0, 0]), np.array([0, 0, -1.0])),
    "sagittal": (np.array([0, 1.0, 0]), np.array([0, 0, -1.0])),
}
results = {}
for plane in json.load(open(planes_path)):
    right, down = axes[plane["orientation"]]
    normal = np.cross(right, down)
    angle = np.radians(plane["rotation_degrees"])
    right = right * np.cos(angle) + normal * np.sin(angle)
    normal = np.cross(right, down)
    w, h, pm = plane["width"], plane["height"], plane["pixel_mm"]
    step = min(dx, dy, dz)
    samples = 1 if plane["projection"] == "plane" else int(np.floor(plane["slab_mm"] / step)) + 1
    first = -(samples - 1) / 2 * step
    ys, xs = np.mgrid[0:h, 0:w]
    base = centre + normal * plane["offset_mm"]
    points = base[None, None, :] + down[None, None, :] * ((ys - (h - 1) / 2) * pm)[..., None] \
        + right[None, None, :] * ((xs - (w - 1) / 2) * pm)[..., None]
    stack = []
    for s in range(samples):
        p = points + normal * (first + s * step)
        stack.append(sample(p[..., 0] / dx, p[..., 1] / dy, p[..., 2] / dz))
    stack = np.array(stack)
    with np.errstate(all="ignore"):
        if plane["projection"] == "mip":
            expected = np.nanmax(stack, axis=0)
        elif plane["projection"] == "minip":
            expected = np.nanmin(stack, axis=0)
        else:
            expected = np.nanmean(stack, axis=0)
    ours = np.fromfile(plane["values"], dtype="<f4").reshape(h, w).astype(np.float64)
    both = ~np.isnan(expected) & ~np.isnan(ours)
    results[plane["name"]] = {
        "max_difference": float(np.max(np.abs(expected[both] - ours[both]))) if both.any() else None,
        "compared": int(both.sum()),
        "nan_agree": bool(np.array_equal(np.isnan(expected), np.isnan(ours))),
    }
print(json.dumps(results))
