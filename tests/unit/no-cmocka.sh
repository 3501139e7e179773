#!/bin/bash
echo "cmocka was not found when configure ran, so the unit tests were not built." >&2
echo "Install it (Debian: apt-get install libcmocka-dev), re-run ./configure, then make check." >&2
exit 1
