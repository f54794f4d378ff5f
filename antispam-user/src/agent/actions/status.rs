//! `status` and `break-glass list` over the control socket: the same answers as `GET /status`.

use crate::{
    agent::{core::Core, status},
    control::{Data, Reply},
};

impl Core {
    pub fn status(&self) -> Reply {
        Reply::data(Data::Status(Box::new(status::build(&self.shared))))
    }

    pub fn break_glass_list(&self) -> Reply {
        Reply::data(Data::BreakGlass(
            self.shared.operations().break_glass.view(),
        ))
    }
}
