// Umbrella header of the vt-edge loader library.
#pragma once

#include "vtedge/backend.hpp"
#include "vtedge/build_plan.hpp"
#include "vtedge/bundle.hpp"
#include "vtedge/classifier.hpp"
#include "vtedge/compat.hpp"
#include "vtedge/error.hpp"
#include "vtedge/image.hpp"
#include "vtedge/integrity.hpp"
#include "vtedge/latency.hpp"
#include "vtedge/manifest.hpp"
#include "vtedge/preprocess.hpp"
#include "vtedge/tensor_check.hpp"
#include "vtedge/topk.hpp"
#include "vtedge/version.hpp"
