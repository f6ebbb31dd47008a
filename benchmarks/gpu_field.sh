#!/usr/bin/env bash
# The field of strategies on CIFAR-10 on a borrowed GPU: every pool strategy beside SNN (badge,
# vaal, typiclust, lcmd, asal, coreset, uncertainty), 5 repeats, seed 0, the reference protocol,
# so that its rows pair with the random rows of benchmarks/gpu_cifar10.sh (merge the two run
# folders with `python -m bench report RUN_A RUN_B`). Run gpu_cifar10.sh first: it is the missing
# reference. Same preparation as gpu_cifar10.sh (.gpu/wheels, .gpu/cifar10-jpeg.zip), then:
#   OUT=/some/folder bash benchmarks/gpu_field.sh
# Settings (environment): REPEATS, EXTRA as in gpu_cifar10.sh; STRATEGIES to run fewer.
export STRATEGIES="${STRATEGIES:-badge,vaal,typiclust,lcmd,asal,coreset,uncertainty}" SPEED=0
exec bash "$(dirname "$0")/gpu_cifar10.sh"
