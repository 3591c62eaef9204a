"""Applications of the residual networks beyond ImageNet classification: data, embedders, metrics
and tasks for steganalysis (``reslearn.apps.stego``) and age/gender estimation
(``reslearn.apps.faces``). Import the submodules directly; this package imports nothing."""
