# gtest_discover_tests flattens a list given as a property value, so tests
# it discovers cannot get two labels that way. This labels them at ctest
# time instead: `test_list` is the TEST_LIST variable of a discovery, and
# every test in it gets `labels` (a list, e.g. "integration;security").
function(postern_label_discovered test_list labels)
  set(script ${CMAKE_CURRENT_BINARY_DIR}/${test_list}_labels.cmake)
  file(WRITE ${script} "foreach(t IN LISTS ${test_list})\n  set_tests_properties(\${t} PROPERTIES LABELS \"${labels}\")\nendforeach()\n")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${script})
endfunction()
