# SLUICE_SANITIZE=address,undefined builds everything with those sanitizers;
# UBSan is made fatal so undefined behaviour fails the tests.
if(SLUICE_SANITIZE)
    add_compile_options(-fsanitize=${SLUICE_SANITIZE} -fno-omit-frame-pointer -g)
    add_link_options(-fsanitize=${SLUICE_SANITIZE})
    if(SLUICE_SANITIZE MATCHES "undefined")
        add_compile_options(-fno-sanitize-recover=undefined)
    endif()
endif()
