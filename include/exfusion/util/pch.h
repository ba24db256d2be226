// Precompiled header: the LibTorch headers that almost every translation unit pulls in.
// Only the build uses it; each file still includes what it needs by itself.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn.h>
#include <torch/types.h>
