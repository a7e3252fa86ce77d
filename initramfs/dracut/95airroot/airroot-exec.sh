#!/bin/sh
# dracut cmdline hook (sourced by dracut's /init, PID 1): hand the whole boot to airroot. exec keeps PID 1;
# /proc, /sys, /dev and /run are already mounted by dracut, which `airroot init` detects and keeps.
# (module-setup.sh stores the binary non-executable so that dracut's strip pass leaves it intact.)
chmod 0755 /usr/bin/airroot
exec /usr/bin/airroot init
