# Runs at install time (cmake --install, cpack), when CMAKE_INSTALL_PREFIX is
# final. Installs ckptd.service, ckptd.socket and the example ckptd.conf.
# Set by packaging.cmake: ckptd_source_dir, ckptd_sysconfdir (configure-time
# CMAKE_INSTALL_SYSCONFDIR) and ckptd_unitdir (CKPTD_SYSTEMD_UNITDIR).

string(REGEX REPLACE "(.)/+$" "\\1" prefix "${CMAKE_INSTALL_PREFIX}")

# GNUInstallDirs' rule for the configuration directory, applied to the prefix
# in force now: /usr -> /etc, /opt/X -> /etc/opt/X, else PREFIX/etc. An
# absolute CMAKE_INSTALL_SYSCONFDIR is used as given.
if(IS_ABSOLUTE "${ckptd_sysconfdir}")
  set(sysconfdir "${ckptd_sysconfdir}")
elseif(prefix STREQUAL "/usr" AND ckptd_sysconfdir STREQUAL "etc")
  set(sysconfdir "/etc")
elseif(prefix MATCHES "^/opt/" AND ckptd_sysconfdir STREQUAL "etc")
  set(sysconfdir "/etc${prefix}")
else()
  set(sysconfdir "${prefix}/${ckptd_sysconfdir}")
endif()
set(confdir "${sysconfdir}/ckptd")

# Debian 12 packages ship units in /lib/systemd/system (/usr/lib after the
# /usr merge is finished, from Debian 13); other prefixes keep them inside.
if(ckptd_unitdir STREQUAL "")
  if(prefix STREQUAL "/usr")
    set(unitdir "/lib/systemd/system")
  else()
    set(unitdir "${prefix}/lib/systemd/system")
  endif()
elseif(IS_ABSOLUTE "${ckptd_unitdir}")
  set(unitdir "${ckptd_unitdir}")
else()
  set(unitdir "${prefix}/${ckptd_unitdir}")
endif()

# file(INSTALL) puts DESTDIR in front of the destination by itself.
file(INSTALL DESTINATION "${unitdir}" TYPE FILE FILES
     "${ckptd_source_dir}/systemd/ckptd.service" "${ckptd_source_dir}/systemd/ckptd.socket")

# The source unit names the Debian paths (ExecStart= and ExecReload= run
# /usr/bin/ckptd with /etc/ckptd/ckptd.conf); point it at this installation.
set(binary "${prefix}/bin/ckptd")
if(NOT binary STREQUAL "/usr/bin/ckptd" OR NOT confdir STREQUAL "/etc/ckptd")
  set(unit "$ENV{DESTDIR}${unitdir}/ckptd.service")
  file(READ "${unit}" text)
  set(exec_start "ExecStart=/usr/bin/ckptd --config /etc/ckptd/ckptd.conf")
  string(FIND "${text}" "${exec_start}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "systemd/ckptd.service has no line '${exec_start}'; "
                        "update systemd/install-config-and-units.cmake with it")
  endif()
  string(REPLACE "=/usr/bin/ckptd " "=${binary} " text "${text}")
  string(REPLACE "/etc/ckptd/ckptd.conf" "${confdir}/ckptd.conf" text "${text}")
  file(WRITE "${unit}" "${text}")
  message(STATUS "Pointed ${unit} at ${binary} and ${confdir}/ckptd.conf")
endif()

# Like a dpkg conffile: an edited ckptd.conf is left alone, and the example
# goes next to it as ckptd.conf.dist.
set(example "${ckptd_source_dir}/etc/ckptd.conf")
set(installed "$ENV{DESTDIR}${confdir}/ckptd.conf")
set(rename ckptd.conf)
if(EXISTS "${installed}")
  file(SHA256 "${example}" new_hash)
  file(SHA256 "${installed}" old_hash)
  if(NOT new_hash STREQUAL old_hash)
    set(rename ckptd.conf.dist)
    message(STATUS "Keeping the edited ${installed}; the example goes to ckptd.conf.dist")
  endif()
endif()
file(INSTALL DESTINATION "${confdir}" TYPE FILE RENAME ${rename} FILES "${example}")
