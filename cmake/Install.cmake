# Install rules (cmake --install BUILD [--prefix DIR], DESTDIR honoured):
#   bin/sluice
#   ${SYSCONFDIR}/sluice/sluice.json     the default configuration; an existing
#                                        one is kept and the new one is written
#                                        beside it as sluice.json.default
#   share/sluice/sluice.schema.json      the JSON Schema for editors
#   share/man/man1/sluice.1, man5/sluice.json.5
#   ${SLUICE_SYSTEMD_UNITDIR}/sluice.service
# With the prefix /usr, GNUInstallDirs puts the configuration in /etc; with
# /usr/local (the default), in /usr/local/etc.
include(GNUInstallDirs)

set(SLUICE_SYSTEMD_UNITDIR "lib/systemd/system" CACHE STRING
    "Where sluice.service is installed, relative to the prefix (or absolute)")

set(SLUICE_CONFIG_DIR "${CMAKE_INSTALL_FULL_SYSCONFDIR}/sluice")
set(SLUICE_BIN_PATH "${CMAKE_INSTALL_FULL_BINDIR}/sluice")
configure_file(${CMAKE_SOURCE_DIR}/systemd/sluice.service.in
    ${CMAKE_BINARY_DIR}/sluice.service @ONLY)

install(TARGETS sluice RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
# file(INSTALL) adds DESTDIR itself; only the check for an existing file needs it.
install(CODE "
    if(EXISTS \"\$ENV{DESTDIR}${SLUICE_CONFIG_DIR}/sluice.json\")
        message(STATUS \"Keeping: \$ENV{DESTDIR}${SLUICE_CONFIG_DIR}/sluice.json (the new default: sluice.json.default)\")
        file(INSTALL \"${CMAKE_SOURCE_DIR}/config/sluice.json\" DESTINATION \"${SLUICE_CONFIG_DIR}\"
            RENAME sluice.json.default)
    else()
        file(INSTALL \"${CMAKE_SOURCE_DIR}/config/sluice.json\" DESTINATION \"${SLUICE_CONFIG_DIR}\")
    endif()
")
install(FILES ${CMAKE_SOURCE_DIR}/config/sluice.schema.json
    DESTINATION ${CMAKE_INSTALL_DATADIR}/sluice)
install(FILES ${CMAKE_SOURCE_DIR}/man/sluice.1 DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
install(FILES ${CMAKE_SOURCE_DIR}/man/sluice.json.5 DESTINATION ${CMAKE_INSTALL_MANDIR}/man5)
install(FILES ${CMAKE_BINARY_DIR}/sluice.service DESTINATION ${SLUICE_SYSTEMD_UNITDIR})
