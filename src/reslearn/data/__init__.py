"""Data: loaders for CIFAR (python pickles), IDX (MNIST / Fashion-MNIST) and image folders, batch
augmentation on the training device, ImageNet-style transforms and test-time averaging.

Import the submodules directly (``reslearn.data.cifar``, ``reslearn.data.augment``, ...): this
package imports nothing, so ``import reslearn`` stays cheap.
"""
