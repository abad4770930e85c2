# Run by `cmake --install` (and cpack): writes the files whose content
# depends on where mailbridge is installed, from the prefix actually used
# (the configured one, or `cmake --install --prefix P`):
#   - the configuration: the example, with data in /var/lib/mailbridge and
#     the plugin directory of this prefix;
#   - the systemd unit, running this prefix's binary on that configuration.
# The configure step hands over MB_SRC, MB_CONF_DEST (absolute /etc/mailbridge
# for prefix /usr, else relative to the prefix), MB_SBINDIR and MB_LIBDIR.
if(IS_ABSOLUTE "${MB_CONF_DEST}")
  set(MB_CONF_FULL "${MB_CONF_DEST}")
else()
  set(MB_CONF_FULL "${CMAKE_INSTALL_PREFIX}/${MB_CONF_DEST}")
endif()
set(MB_SBIN_FULL "${CMAKE_INSTALL_PREFIX}/${MB_SBINDIR}")
set(_root "$ENV{DESTDIR}")

# the configuration: a conffile, installed once and then the administrator's
set(_conf "${_root}${MB_CONF_FULL}/mailbridge.conf")
file(READ "${MB_SRC}/conf/mailbridge.conf" _text)
string(REPLACE "data_dir = data" "data_dir = /var/lib/mailbridge" _text "${_text}")
string(APPEND _text "\n[plugins]\ndir = ${CMAKE_INSTALL_PREFIX}/${MB_LIBDIR}/mailbridge/plugins\n")
message(STATUS "Installing: ${_conf}")
file(WRITE "${_conf}" "${_text}")
# Staged (cpack, DESTDIR): 0644, Debian's conffile mode (it holds no secret
# as shipped); the postinst makes it root:mailbridge 0640 on the first
# install. Installed for real: 0640, and root:mailbridge when run as root
# and the group exists, so the service user can read it and only root write.
if(_root STREQUAL "")
  execute_process(COMMAND id -u OUTPUT_VARIABLE _uid OUTPUT_STRIP_TRAILING_WHITESPACE)
  execute_process(COMMAND getent group mailbridge RESULT_VARIABLE _nogroup OUTPUT_QUIET)
  if(_uid STREQUAL "0" AND NOT _nogroup)
    execute_process(COMMAND chown root:mailbridge "${_conf}")
  endif()
  file(CHMOD "${_conf}" PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ)
else()
  file(CHMOD "${_conf}" PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
endif()

set(_unit "${_root}${CMAKE_INSTALL_PREFIX}/lib/systemd/system/mailbridge.service")
message(STATUS "Installing: ${_unit}")
configure_file("${MB_SRC}/conf/mailbridge.service.in" "${_unit}" @ONLY)
file(CHMOD "${_unit}" PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
