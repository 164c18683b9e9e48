# list(APPEND precision_cases ...), list(APPEND precision_tests ...) for this part
