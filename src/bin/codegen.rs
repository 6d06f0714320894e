//! Generates the EWS operation surface from `wsdl/services.wsdl`.

fn main() {}
