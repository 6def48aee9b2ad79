//! Tells the dispatcher that rows were queued. Fire and forget: if the dispatcher is
//! restarting, its next tick finds the rows anyway.

use herald_supervision::ChildSlot;

use super::actor::DispatcherMsg;

#[derive(Clone)]
pub struct DispatcherClient {
    slot: ChildSlot,
}

impl DispatcherClient {
    pub fn new(slot: ChildSlot) -> Self {
        Self { slot }
    }

    pub fn wake(&self) {
        if let Some(actor) = self.slot.get::<DispatcherMsg>() {
            let _ = actor.send_message(DispatcherMsg::Wake);
        }
    }

    pub fn is_running(&self) -> bool {
        self.slot.cell().is_some()
    }
}
