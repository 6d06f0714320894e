#!/usr/bin/env bash
# Runs Redmine 5 from Debian's packages (SQLite backend) on loopback for taskbridge's tests and
# for trying the Redmine host: `scripts/redmine.sh start|stop|status`.
#
# start installs the packages when they are missing (as root, non-interactively), enables the
# REST API, loads Redmine's default data (trackers, statuses, roles, activities) when the
# database has none, lets the admin in without a forced password change, writes the admin's API
# key to a file and starts the server; each step is skipped when already done. It prints the
# URL and where the key is.
#
# Settings (environment):
#   TASKBRIDGE_REDMINE_PORT  the port (default 3380)
#   TASKBRIDGE_REDMINE_DIR   where the key, the URL, the pid and the log go
#                            (default /tmp/taskbridge-redmine)
set -euo pipefail

port=${TASKBRIDGE_REDMINE_PORT:-3380}
dir=${TASKBRIDGE_REDMINE_DIR:-/tmp/taskbridge-redmine}
app=/usr/share/redmine
url="http://127.0.0.1:$port"
packages=(redmine redmine-sqlite ruby-webrick)
export RAILS_ENV=production X_DEBIAN_SITEID=default

installed() {
  local p
  for p in "${packages[@]}"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || return 1
  done
}

install() {
  installed && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "Redmine is not installed; as root: $0 start (or: apt-get install -y ${packages[*]})" >&2
    exit 1
  fi
  echo "installing ${packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "redmine redmine/instances/default/database-type select sqlite3" | debconf-set-selections
  apt-get update -qq || true
  apt-get install -y -qq "${packages[@]}" >/dev/null
}

# Bash's own /dev/tcp: a clean machine may have no curl.
answering() {
  timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && printf 'GET / HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n' >&3 && head -1 <&3 | grep -q ' 200 '" 2>/dev/null
}

running() {
  [ -f "$dir/server.pid" ] && kill -0 "$(cat "$dir/server.pid")" 2>/dev/null && answering
}

report() {
  echo "Redmine: $url"
  echo "admin API key: $dir/api.key"
}

prepare() {
  # The packaged Gemfile has no web server; webrick is Debian's ruby-webrick. The lock file the
  # package wrote does not list it, so bundler must write a new one.
  if ! grep -qs '^gem "webrick"' "$app/Gemfile.local"; then
    echo 'gem "webrick"' >> "$app/Gemfile.local"
    rm -f "$(readlink -f "$app/Gemfile.lock")"
  fi
  mkdir -p "$dir"
  chmod 700 "$dir"
  # One runner does every setting: starting Rails costs seconds.
  (cd "$app" && ruby bin/rails runner - <<RUBY
    if Redmine::DefaultData::Loader.no_data?
      Redmine::DefaultData::Loader.load("en")
    end
    Setting.rest_api_enabled = "1"
    admin = User.find_by_login("admin")
    admin.must_change_passwd = false
    admin.save!
    File.write("$dir/api.key.new", admin.api_key)
RUBY
  )
  mv "$dir/api.key.new" "$dir/api.key"
  chmod 600 "$dir/api.key"
  echo "$url" > "$dir/url"
}

start() {
  install
  if running; then
    report
    return 0
  fi
  prepare
  rm -f "$dir/server.pid"
  # Every descriptor of the background part goes to the log: a caller reading this script's
  # output (a test harness) would otherwise wait for an end of file that never comes.
  (cd "$app" && exec setsid ruby bin/rails server -u webrick -b 127.0.0.1 -p "$port" \
      -P "$dir/server.pid") >"$dir/server.log" 2>&1 </dev/null &
  for _ in $(seq 1 180); do
    if answering; then
      report
      return 0
    fi
    sleep 1
  done
  echo "Redmine did not answer on $url within 180 s; its log:" >&2
  tail -40 "$dir/server.log" >&2
  exit 1
}

stop() {
  if [ -f "$dir/server.pid" ]; then
    pid=$(cat "$dir/server.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    rm -f "$dir/server.pid"
  fi
  echo "Redmine stopped"
}

status() {
  if running; then
    report
  else
    echo "Redmine is not running on $url"
    exit 3
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
