"""Lip-sync: turning viseme weights into ARKit blendshape weights.

Kept free of Qt and audio code so the table can be loaded, checked and edited from the CLI and in
tests; the audio front end (which produces viseme weights) lives elsewhere and only needs
``VisemeTable.blendshapes``.
"""
