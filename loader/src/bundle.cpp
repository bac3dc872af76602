#include "vtedge/bundle.hpp"

#include "vtedge/version.hpp"

namespace vtedge {

Bundle open_bundle(const std::filesystem::path& dir) {
    Bundle bundle;
    bundle.dir = dir;
    bundle.manifest = read_manifest(dir);
    bundle.verified = verify_bundle(dir, bundle.manifest);
    return bundle;
}

bool has_tensorrt_runtime() {
#ifdef VTEDGE_WITH_TENSORRT
    return true;
#else
    return false;
#endif
}

}  // namespace vtedge
