# cmake -DMB_BIN=... -DTEMPLATE=doc/mailbridge.conf.5 -DOUT=... -P gen_conf_man.cmake
# mailbridge.conf(5) with its key list generated from the parser's own
# table (mailbridge check-config --keys=man), in place of the line
# ".\" @KEYS@" of the template: the page cannot name a default or a value
# the parser does not have.
execute_process(COMMAND ${MB_BIN} check-config --keys=man OUTPUT_VARIABLE keys RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR keys STREQUAL "")
  message(FATAL_ERROR "${MB_BIN} check-config --keys=man failed (${rc})")
endif()
file(READ ${TEMPLATE} page)
string(FIND "${page}" ".\\\" @KEYS@\n" at)
if(at LESS 0)
  message(FATAL_ERROR "${TEMPLATE} has no .\\\" @KEYS@ line")
endif()
string(REPLACE ".\\\" @KEYS@\n" "${keys}" page "${page}")
file(WRITE ${OUT} "${page}")
