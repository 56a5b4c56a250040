# Sourced by scripts/tools/*.sh: install Debian packages with apt-get, as root or through sudo.
# apt_install WHO PACKAGE...: WHO names the calling script in messages.
apt_install() {
  local who="$1"
  shift
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo="sudo"
    else
      echo "$who: installing $* needs root (apt-get install $*)" >&2
      return 1
    fi
  fi
  echo "$who: installing $* with apt-get" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}
