#!/bin/sh
# dracut cmdline hook (sourced by dracut's /init, PID 1): hand the whole boot to airroot. exec keeps PID 1;
# /proc, /sys, /dev and /run are already mounted by dracut, which `airroot init` detects and keeps.
exec /usr/bin/airroot init
