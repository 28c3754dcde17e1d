/*!
Settings files: typed TOML schemas, validated before any compute.
*/
