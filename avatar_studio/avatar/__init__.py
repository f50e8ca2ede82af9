"""The avatar core (Qt-free): glTF in and out, the ``Avatar`` model, morph evaluation, blendshape names."""
