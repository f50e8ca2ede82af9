"""Avatar Studio: selfie → photoreal, animatable 3D avatar, checked before it ships.

The package is layered (see README): ``avatar`` (glTF in and out, morph evaluation, blendshape
names) and ``lipsync`` (viseme table) are free of Qt; only ``gui`` may import Qt.
"""

__version__ = "0.1.0"
