# Installation layout, man page, Debian package and packaging tests of ckptd.
# Included from the root CMakeLists.txt.
#
# Layout for a prefix P (cmake --install build --prefix P):
#   P/bin/ckptd                              (daemon/CMakeLists.txt)
#   P/share/man/man8/ckptd.8.gz              when help2man is installed
#   P/lib/sysusers.d/ckptd.conf              the ckptd system user
#   <unit dir>/ckptd.service, ckptd.socket   /lib/systemd/system for P=/usr
#                                            (Debian 12's unit directory),
#                                            else P/lib/systemd/system
#   <sysconf dir>/ckptd/ckptd.conf           /etc for P=/usr, GNUInstallDirs'
#                                            rules otherwise
# The unit and config directories are chosen when installing, not when
# configuring, because the prefix may change then (cmake --install --prefix,
# cpack's /usr). The installed ckptd.service names P/bin/ckptd and the
# installed config; for P=/usr it is systemd/ckptd.service byte for byte.

include(GNUInstallDirs)

set(CKPTD_SYSTEMD_UNITDIR "" CACHE STRING
    "Where ckptd.service and ckptd.socket go (empty: /lib/systemd/system for prefix /usr, else PREFIX/lib/systemd/system)")

set(ckptd_packaging_dir ${CMAKE_CURRENT_LIST_DIR})

# ---- Man page, from ckptd --help and ckptd --version -----------------------

find_program(HELP2MAN_EXECUTABLE help2man)
find_program(GZIP_EXECUTABLE gzip)
if(HELP2MAN_EXECUTABLE AND GZIP_EXECUTABLE)
  set(ckptd_man ${CMAKE_CURRENT_BINARY_DIR}/ckptd.8)
  add_custom_command(
    OUTPUT ${ckptd_man}.gz
    COMMAND ${HELP2MAN_EXECUTABLE} --no-info --section=8
            "--name=index the checkpoints of training jobs and serve them over HTTP"
            --include=${ckptd_packaging_dir}/ckptd.h2m --output=${ckptd_man} $<TARGET_FILE:ckptd>
    # -n leaves the timestamp out, so rebuilding the package is reproducible.
    COMMAND ${GZIP_EXECUTABLE} -9nf ${ckptd_man}
    DEPENDS ckptd ${ckptd_packaging_dir}/ckptd.h2m
    COMMENT "Generating the ckptd(8) man page with help2man"
    VERBATIM)
  add_custom_target(ckptd_man ALL DEPENDS ${ckptd_man}.gz)
  install(FILES ${ckptd_man}.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)
  set(CKPTD_HAVE_MAN_PAGE 1)
else()
  message(STATUS "help2man or gzip not found: the ckptd(8) man page is not built "
                 "(scripts/install-deps installs help2man)")
  set(CKPTD_HAVE_MAN_PAGE 0)
endif()

# ---- Units, sysusers.d and example configuration ---------------------------

install(FILES ${ckptd_packaging_dir}/ckptd.sysusers
        DESTINATION lib/sysusers.d RENAME ckptd.conf)
install(CODE "
  set(ckptd_source_dir \"${PROJECT_SOURCE_DIR}\")
  set(ckptd_sysconfdir \"${CMAKE_INSTALL_SYSCONFDIR}\")
  set(ckptd_unitdir \"${CKPTD_SYSTEMD_UNITDIR}\")")
install(SCRIPT ${ckptd_packaging_dir}/install-config-and-units.cmake)

# ---- Debian package: cpack -G DEB -------------------------------------------

set(CPACK_PACKAGE_NAME ckptd)
set(CPACK_PACKAGE_VENDOR ckptd)
set(CKPTD_PACKAGE_MAINTAINER "ckptd maintainers <ckptd@localhost>" CACHE STRING
    "Maintainer field of the Debian package (Name <email>)")
set(CPACK_PACKAGE_CONTACT "${CKPTD_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "checkpoint index of fine-tuning jobs, served over HTTP")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_GENERATOR DEB)
# Stage with DESTDIR and the real prefix, so that the install script above
# sees /usr and puts the units and config where Debian expects them.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "checkpoint index of fine-tuning jobs, served over HTTP
ckptd runs beside a training job as a systemd service. It watches the
training folders with inotify, records each checkpoint in a RocksDB index
once it is completely written, and serves the index on 127.0.0.1:8321 with
llama-stack's post-training artifacts API.
.
The service is not enabled on installation: name the folders to watch in
/etc/ckptd/ckptd.conf, then run systemctl enable --now ckptd.service.")

# The maintainer scripts need systemd-sysusers (systemd) or adduser;
# ExecReload= runs /bin/kill (procps).
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser | systemd, procps")
find_program(DPKG_SHLIBDEPS_EXECUTABLE dpkg-shlibdeps)
if(DPKG_SHLIBDEPS_EXECUTABLE)
  # Library packages and versions come from what ckptd actually links.
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
else()
  message(STATUS "dpkg-shlibdeps not found: the ckptd package declares Debian 12's library packages by name")
  string(APPEND CPACK_DEBIAN_PACKAGE_DEPENDS ", librocksdb7.8, libboost-json1.81.0,"
         " libboost-program-options1.81.0, libsystemd0, libstdc++6, libc6")
endif()

# postinst creates the user; prerm stops the units; postrm purges the index
# and the user. conffiles keeps an edited ckptd.conf across upgrades.
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${ckptd_packaging_dir}/debian/postinst
    ${ckptd_packaging_dir}/debian/prerm
    ${ckptd_packaging_dir}/debian/postrm
    ${ckptd_packaging_dir}/debian/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

include(CPack)

# ---- Tests --------------------------------------------------------------------

if(BUILD_TESTING)
  # Exit code 77 means a tool is missing: reported as skipped, not passed.
  add_test(NAME systemd_units
           COMMAND ${PROJECT_SOURCE_DIR}/tests/systemd_units_test.sh
                   ${PROJECT_SOURCE_DIR} ${CMAKE_BINARY_DIR} ${CKPTD_HAVE_MAN_PAGE})
  add_test(NAME debian_package
           COMMAND ${PROJECT_SOURCE_DIR}/tests/package_test.sh
                   ${PROJECT_SOURCE_DIR} ${CMAKE_BINARY_DIR} ${CKPTD_HAVE_MAN_PAGE})
  set_tests_properties(systemd_units debian_package PROPERTIES SKIP_RETURN_CODE 77)
  set_tests_properties(systemd_units PROPERTIES TIMEOUT 60)
  # cpack rebuilds a stale tree before packaging; up to date it takes seconds.
  set_tests_properties(debian_package PROPERTIES TIMEOUT 600)
endif()
