//! `config.json`: any bytes end in a configuration inside the structural bounds, or in an
//! error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if let Ok(config) = validator::eval::config::ModelConfig::parse(input) {
        assert!(config.num_heads > 0 && config.num_kv_heads > 0);
        assert_eq!(config.num_heads % config.num_kv_heads, 0);
        assert!(config.num_layers <= 128 && config.num_heads <= 128 && config.head_dim <= 256);
        assert!(config.rotary_dim > 0 && config.rotary_dim % 2 == 0);
    }
});
