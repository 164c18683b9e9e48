#include "reference/nn/layers.h"
