// Umbrella header of the vt-edge loader library.
#pragma once

#include "vtedge/build_plan.hpp"
#include "vtedge/bundle.hpp"
#include "vtedge/compat.hpp"
#include "vtedge/error.hpp"
#include "vtedge/image.hpp"
#include "vtedge/integrity.hpp"
#include "vtedge/manifest.hpp"
#include "vtedge/preprocess.hpp"
#include "vtedge/topk.hpp"
#include "vtedge/version.hpp"
