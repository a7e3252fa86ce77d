# Sourced by fetch-kernel.sh and fetch-signed-boot.sh: a private apt for one Debian suite, with its own sources,
# lists, cache and an empty dpkg status, so the build host's apt sources and state are never touched (the host may
# run another release: Debian 12 here). Nothing installs through it; it only downloads .debs.
# Sets $apt (its directory) and the array $opts (apt's -o options); refreshes the lists when a day old.
# Needs $cache, $suite, $mirror, $security and $me (the calling script's name, for messages).
apt="$cache/apt/$suite"
mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/sources.list.d"
[ -f "$apt/status" ] || : > "$apt/status"
{
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite-updates main"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $security $suite-security main"
} > "$apt/sources.list"
opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/sources.list.d"
      -o "Dir::State::Lists=$apt/lists" -o "Dir::State::status=$apt/status" -o "Dir::Cache=$apt/cache"
      -o "APT::Architecture=amd64" -o "APT::Architectures::=amd64" -o "Debug::NoLocking=1")

stamp="$apt/lists/.updated"
if [ -z "$(find "$stamp" -mmin -1440 2>/dev/null)" ]; then
  if apt-get "${opts[@]}" -q update >&2; then
    touch "$stamp"
  elif [ -f "$stamp" ]; then
    echo "$me: 'apt-get update' for $suite failed; using the package lists of $(date -r "$stamp" +%F)" >&2
  else
    echo "$me: cannot fetch the package lists of $suite from $mirror (apt-get update failed above);" \
      "check the network or set MIRROR=URL" >&2
    exit 1
  fi
fi
