# Source me: activates the venv and the colcon workspace, and sets the DDS defaults.
# Usable from bash and zsh; it never changes shell options.
_openhelix_root="$(cd "$(dirname "${BASH_SOURCE[0]:-${(%):-%x}}")/.." && pwd)"
if [[ ! -f "$_openhelix_root/install/setup.bash" ]]; then
  echo "openhelix: workspace not built; run $_openhelix_root/scripts/setup first" >&2
  return 1 2>/dev/null || exit 1
fi
source "$_openhelix_root/.venv/bin/activate"
export AMENT_PREFIX_PATH="$_openhelix_root/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
source "$_openhelix_root/install/setup.bash"
# Fast DDS's default shared-memory segment drops camera frames above a few hundred KB.
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$_openhelix_root/config/fastdds_profile.xml}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
# Discovery stays on this host unless the user widens it (config/split_deployment.yaml).
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export OPENHELIX_ROOT="$_openhelix_root"
unset _openhelix_root
