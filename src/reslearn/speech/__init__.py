"""Speech: waveform I/O, batched MFCC / log-mel front ends, the Google Speech Commands keyword
spotting task (Tang & Lin 2018), connected-digit strings for CTC (Heymann et al. 2016 style),
and their metrics.

Import the submodules directly (``reslearn.speech.commands``, ``reslearn.speech.features``, ...):
this package imports nothing, so ``import reslearn`` stays cheap and librosa / soundfile are only
needed by code that reads audio (``pip install reslearn[audio]``).
"""
