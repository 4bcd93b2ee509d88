#!/usr/bin/python3
"""The peer of `grassroots bench render`: VTK's CPU ray caster (vtkFixedPointVolumeRayCastMapper,
Debian's python3-vtk9, hence Debian's /usr/bin/python3; run under xvfb-run) rendering a volume
the bench wrote, at the size, sample
distance and transfer function the bench gives, 2 threads, parallel projection, turned a degree
per frame as the bench turns its own. Prints the times as JSON on its last line.

Usage: vtk-raycast.py VOLUME.i16 META_JSON"""
import json, statistics, sys, time

import numpy as np
import vtk
from vtk.util import numpy_support

raw, meta = sys.argv[1], json.loads(sys.argv[2])
nx, ny, nz = meta["dims"]
sx, sy, sz = meta["spacing"]
voxels = np.fromfile(raw, dtype="<i2")
image = vtk.vtkImageData()
image.SetDimensions(nx, ny, nz)
image.SetSpacing(sx, sy, sz)
image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(voxels, deep=True, array_type=vtk.VTK_SHORT))

vtk.vtkMultiThreader.SetGlobalMaximumNumberOfThreads(2)
mapper = vtk.vtkFixedPointVolumeRayCastMapper()
mapper.SetInputData(image)
mapper.SetNumberOfThreads(2)
mapper.AutoAdjustSampleDistancesOff()
mapper.SetSampleDistance(meta["sample_distance"])
mapper.SetImageSampleDistance(1.0)

colour = vtk.vtkColorTransferFunction()
opacity = vtk.vtkPiecewiseFunction()
for value, (r, g, b), alpha in meta["points"]:
    colour.AddRGBPoint(value, r, g, b)
    opacity.AddPoint(value, alpha)
prop = vtk.vtkVolumeProperty()
prop.SetColor(colour)
prop.SetScalarOpacity(opacity)
prop.SetScalarOpacityUnitDistance(1.0)  # opacities are per millimetre, as the bench's
prop.SetInterpolationTypeToLinear()
if meta["shade"]:
    prop.ShadeOn()
    prop.SetAmbient(0.3)
    prop.SetDiffuse(0.7)
    prop.SetSpecular(0.0)
else:
    prop.ShadeOff()
volume = vtk.vtkVolume()
volume.SetMapper(mapper)
volume.SetProperty(prop)

renderer = vtk.vtkRenderer()
renderer.AddVolume(volume)
renderer.SetBackground(0, 0, 0)
window = vtk.vtkRenderWindow()
window.AddRenderer(renderer)
window.SetSize(meta["size"], meta["size"])
window.SetOffScreenRendering(1)
extent = np.array([(nx - 1) * sx, (ny - 1) * sy, (nz - 1) * sz])
centre = extent / 2
diagonal = float(np.linalg.norm(extent))
camera = renderer.GetActiveCamera()
camera.ParallelProjectionOn()
camera.SetFocalPoint(*centre)
camera.SetPosition(centre[0], centre[1] - diagonal * 2, centre[2])  # from the front
camera.SetViewUp(0, 0, 1)
camera.SetParallelScale(diagonal / 2)
renderer.ResetCameraClippingRange()
window.Render()  # the first frame builds VTK's tables
times = []
for _ in range(meta["frames"]):
    camera.Azimuth(1)
    renderer.ResetCameraClippingRange()
    started = time.perf_counter()
    window.Render()
    times.append((time.perf_counter() - started) * 1000)
if meta.get("png"):  # the last frame, to compare with the bench's own picture
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.Update()
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(meta["png"])
    writer.SetInputConnection(grab.GetOutputPort())
    writer.Write()
times.sort()
print(json.dumps({"median_ms": statistics.median(times), "p95_ms": times[int(0.95 * (len(times) - 1))],
                  "frames": len(times), "vtk": vtk.vtkVersion.GetVTKVersion(), "threads": 2}))
