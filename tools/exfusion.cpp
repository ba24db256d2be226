// exfusion CLI (being written): parse, then call the library.
int main() { return 0; }
