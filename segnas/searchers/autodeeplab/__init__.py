"""``searcher=autodeeplab``: Auto-DeepLab's differentiable search (Liu et al., CVPR 2019).

The supernet (``segnas.spaces.autodeeplab.supernet``) trains on trainA / trainB halves of the
training split, alternating weight and architecture steps (``module.py``); every epoch the cell
is decoded greedily and the path by Viterbi (``records.py``). The result is one candidate, the
final decoded genotype, which the pipeline retrains from scratch.
"""
